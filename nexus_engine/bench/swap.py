"""`nexus bench swap`: how fast a warm tower comes back, next to what the machine can copy.

In one run, interleaved, repeated, medians (GB/s = 1e9 bytes per second; the first round is a warm-up):
  pinned_copy    one page-locked host buffer -> device, a single copy: the ceiling the warm tier aims at
  warm_swap_in   WarmModule.to_device() of a Llama-style decoder built from a config with random weights:
                 allocate, one copy from the page-locked arena, re-point every tensor
  naive_to       the same weights from pageable memory with model.to(device), tensor by tensor
  pageable_copy  one pageable host buffer -> device, a single copy
  alloc_copy     pinned_copy into a freshly allocated buffer: the ceiling including the allocation (on a CPU,
                 where no caching allocator hides it, the kernel zero-filling new pages dominates)
Goal on a GPU: warm_swap_in >= 85 % of pinned_copy. Without CUDA the "device" is a second buffer in RAM
("cpu->cpu"): nothing can be page-locked, naive_to is a per-tensor copy (what .to() does between devices), and
the numbers say nothing about a GPU.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from nexus_engine.residency.warm import WarmModule

GOAL = 0.85
# TinyLlama-1.1B's shape (2.2 GB in bf16) on a GPU; a ~175 MB model of the same family on a CPU
GPU_SHAPE = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
             "num_key_value_heads": 4, "vocab_size": 32000}
CPU_SHAPE = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 12,
             "num_key_value_heads": 4, "vocab_size": 32000}


def build_model(shape: dict[str, int], dtype: torch.dtype, device: str) -> tuple[torch.nn.Module, str]:
    """A Llama decoder from a config with random weights, built directly on `device`; (model, architecture)."""
    try:
        from transformers import AutoModelForCausalLM, LlamaConfig
    except ImportError:  # a machine without transformers still gets a decoder-sized stack of the same bytes
        return _plain_decoder(shape, dtype, device), "plain torch decoder (transformers not installed)"
    config = LlamaConfig(**shape, max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval(), "LlamaForCausalLM"


def _plain_decoder(shape: dict[str, int], dtype: torch.dtype, device: str) -> torch.nn.Module:
    h, f, n, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    layers: list[torch.nn.Module] = [torch.nn.Embedding(v, h)]
    for _ in range(n):
        layers += [torch.nn.Linear(h, 3 * h, bias=False), torch.nn.Linear(h, h, bias=False),
                   torch.nn.Linear(h, 2 * f, bias=False), torch.nn.Linear(f, h, bias=False)]
    with torch.device(device):
        return torch.nn.Sequential(*layers).to(dtype).eval()


def _forward(model: torch.nn.Module, device: str) -> torch.Tensor:
    ids = (torch.arange(16, device=device) * 7 % 1000).unsqueeze(0)
    with torch.inference_mode():
        out = model(input_ids=ids).logits if hasattr(model, "config") else model[0](ids)
    return out.float().cpu()


def _timer(device: str) -> Callable[[Callable[[], Any]], float]:
    cuda = device.startswith("cuda")

    def ms(fn: Callable[[], Any]) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000
    return ms


def _pageable_twin(model: torch.nn.Module, shape: dict[str, int]) -> torch.nn.Module:
    try:
        return copy.deepcopy(model).to("cpu")
    except Exception:  # a model that cannot be deep-copied: build another and copy the weights over
        twin, _ = build_model(shape, torch.bfloat16, "cpu")
        twin.load_state_dict(model.state_dict())
        return twin


def _summary(nbytes: int, runs: list[float]) -> dict[str, Any]:
    timed = runs[1:] or runs  # the first round warms the allocator and the caches
    med = statistics.median(timed)
    return {"gbps": round(nbytes / (med * 1e6), 2), "median_ms": round(med, 3), "first_ms": round(runs[0], 3),
            "runs_ms": [round(r, 3) for r in runs]}


def run(repeats: int = 5, device: str | None = None, layers: int | None = None) -> dict[str, Any]:
    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    shape = dict(GPU_SHAPE if cuda else CPU_SHAPE)
    if layers:
        shape["num_hidden_layers"] = layers
    model, arch = build_model(shape, torch.bfloat16, device)
    reference = _forward(model, device)
    timer = _timer(device)

    naive = _pageable_twin(model, shape)  # the same weights in ordinary pageable RAM, tensor by tensor
    warm = WarmModule(model)
    nbytes = warm.nbytes
    first_swap_out = timer(lambda: warm.to_host(pin=True))  # device -> a new page-locked arena (once per tower)
    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=cuda)
    pageable = torch.empty(nbytes, dtype=torch.uint8)
    pinned.fill_(1)  # touch every page before timing
    pageable.fill_(1)
    target = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def naive_to() -> None:
        if cuda:
            naive.to(device)
        else:  # what .to() does between two devices: a new tensor and a copy per tensor
            for t in [*naive.parameters(), *naive.buffers()]:
                t.clone()

    runs: dict[str, list[float]] = {"pinned_copy": [], "warm_swap_in": [], "naive_to": [], "pageable_copy": [],
                                 "alloc_copy": []}
    swap_out_ms: list[float] = []
    for _ in range(repeats + 1):  # interleaved, so drift (clocks, other tenants) hits every method alike
        runs["pinned_copy"].append(timer(lambda: target.copy_(pinned, non_blocking=True)))
        runs["warm_swap_in"].append(timer(lambda: warm.to_device(device)))
        swap_out_ms.append(timer(warm.to_host))
        runs["naive_to"].append(timer(naive_to))
        if cuda:
            naive.to("cpu")
        runs["pageable_copy"].append(timer(lambda: target.copy_(pageable)))
        runs["alloc_copy"].append(timer(lambda: torch.empty_like(target).copy_(pinned, non_blocking=True)))

    warm.to_device(device)
    identical = torch.equal(_forward(model, device), reference)
    results = {k: _summary(nbytes, v) for k, v in runs.items()}
    ratio = results["warm_swap_in"]["gbps"] / results["pinned_copy"]["gbps"]
    out: dict[str, Any] = {
        "bench": "swap", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.machine(),
        "torch": torch.__version__, "mode": "host->gpu" if cuda else "cpu->cpu",
        "device": f"{device} ({torch.cuda.get_device_name(device)})" if cuda else "cpu (a second buffer in RAM)",
        "model": {"arch": arch, "shape": shape, "dtype": "bfloat16", "bytes": nbytes, "gb": round(nbytes / 1e9, 3),
                  "tensors": warm.n_tensors, "distinct_tensors": len(warm.slots)},
        "warm_host_memory": warm.host_memory, "first_swap_out_ms": round(first_swap_out, 1),
        "swap_out_median_ms": round(statistics.median(swap_out_ms[1:] or swap_out_ms), 3),
        "repeats": repeats, "results": results,
        "warm_vs_pinned": round(ratio, 3),
        "warm_vs_alloc_copy": round(results["warm_swap_in"]["gbps"] / results["alloc_copy"]["gbps"], 3),
        "warm_vs_naive": round(results["warm_swap_in"]["gbps"] / results["naive_to"]["gbps"], 2),
        "pinned_vs_pageable": round(results["pinned_copy"]["gbps"] / results["pageable_copy"]["gbps"], 2),
        "outputs_identical_after_swaps": identical,
    }
    if cuda:
        out["goals"] = {f"warm_swap_in>={GOAL:.0%}_of_pinned_copy": ratio >= GOAL}
    else:
        out["note"] = ("no CUDA: 'device' is a second buffer in RAM, nothing is page-locked, pinned_copy and "
                       "pageable_copy are the same memcpy and naive_to is one clone per tensor; run this on a GPU "
                       "for the numbers that matter")
    return out
