"""Sweep speed on random-weight models of the seed architectures: prefix cache vs naive, same variants.

Real seed weights cannot be loaded in CI or on a lent GPU (nothing downloadable), and the speed of a sweep does
not depend on the weights' values, only on the shapes: so the configs below rebuild the seed shapes with random
weights. `tiny` runs anywhere in a second (tests); the others want a GPU and bf16.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from nexus_engine.research.niwt import stack as st
from nexus_engine.research.niwt.metrics import Batch, LMTask
from nexus_engine.research.niwt.sweep import perturbations, run_variants

# name -> (transformers config class, kwargs)
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    # AgentCPM-Explore class (4B): Qwen3-4B shapes; check the real config.json before reading much into it
    "qwen3-4b": ("Qwen3Config", dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                                     max_position_embeddings=4096, tie_word_embeddings=True)),
    "llama-4b": ("LlamaConfig", dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                                     num_attention_heads=24, num_key_value_heads=8, vocab_size=128256,
                                     max_position_embeddings=4096, tie_word_embeddings=True)),
    "smollm2-135m": ("LlamaConfig", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                         max_position_embeddings=2048, tie_word_embeddings=True)),
    "tiny": ("LlamaConfig", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=256, max_position_embeddings=256,
                                 tie_word_embeddings=True)),
}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def random_model(arch: str, device: str = "cpu", dtype: str = "bf16", layers: int | None = None) -> Any:
    import transformers

    cls_name, kwargs = ARCHS[arch]
    kwargs = dict(kwargs)
    if layers:
        kwargs["num_hidden_layers"] = layers
    config = getattr(transformers, cls_name)(**kwargs)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=_DTYPES[dtype])
    return model.eval()


def random_task(vocab: int, batch: int, seq: int, batches: int = 1, seed: int = 0) -> LMTask:
    g = torch.Generator().manual_seed(seed)
    keep = torch.arange(seq // 2, seq - 1)
    out = []
    for _ in range(batches):
        x = torch.randint(0, vocab, (batch, seq), generator=g)
        out.append(Batch(x, keep, x[:, keep + 1], torch.ones(batch, len(keep), dtype=torch.bool)))
    return LMTask("random", out, f"random-{seed}", f"{batches}x{batch}x{seq} random tokens")


def sweep_speed(arch: str = "tiny", device: str = "cpu", dtype: str = "bf16", batch: int = 4, seq: int = 512,
                widths: tuple[int, ...] = (1, 2, 3, 4), layers: int | None = None, repeats: int = 2) -> dict[str, Any]:
    """Time the full perturbation sweep both ways on one batch; best of `repeats`, interleaved."""
    t0 = time.perf_counter()
    model = random_model(arch, device, dtype, layers)
    build_s = time.perf_counter() - t0
    stack = st.decoder_stack(model)
    task = random_task(model.config.vocab_size, batch, seq)
    variants = perturbations(stack.n_layers, widths)
    run_variants(stack, [task], variants[:2])  # warm-up: kernels, allocator
    best = {"naive": float("inf"), "prefix": float("inf")}
    runs: dict[str, Any] = {}
    cpu = not device.startswith("cuda")
    clock = time.thread_time if cpu else time.perf_counter  # CPU: this thread's CPU time (see lab.py)
    threads = torch.get_num_threads()
    if cpu:
        torch.set_num_threads(1)
    try:
        for _ in range(repeats):
            for mode in ("naive", "prefix"):
                _sync(device)
                t = clock()
                runs[mode] = run_variants(stack, [task], variants, prefix=mode == "prefix")
                _sync(device)
                best[mode] = min(best[mode], clock() - t)
    finally:
        torch.set_num_threads(threads)
    nll = {m: [r.variants[v.name]["random"]["nll"] for v in variants] for m, r in runs.items()}
    out = {
        "arch": arch, "config": ARCHS[arch][1] | ({"num_hidden_layers": layers} if layers else {}),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "dtype": dtype, "torch": torch.__version__, "clock": "thread CPU time, 1 thread" if cpu else "wall time",
        "batch": batch, "seq": seq, "variants": len(variants),
        "build_seconds": build_s, "seconds_naive": best["naive"], "seconds_prefix": best["prefix"],
        "ratio_seconds": best["prefix"] / best["naive"],
        "layer_calls_prefix": runs["prefix"].layer_calls, "layer_calls_naive": runs["naive"].layer_calls,
        "ratio_layer_calls": runs["prefix"].layer_calls / runs["naive"].layer_calls,
        "max_abs_nll_difference": max(abs(a - b) for a, b in zip(nll["prefix"], nll["naive"])),
    }
    if device.startswith("cuda"):
        out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
