"""AGID training at seed scale: the text bridges and a projector trained against random-weight seed-shape teachers.

Real seed weights cannot be loaded in CI or on a lent GPU (nothing downloadable). Step time and memory depend on
shapes, not on weight values, and the teacher's hidden states are a fixed function of its input whatever its
weights, so distilling a collapsed random teacher is a real learning problem (the loss must fall). This runs the
code `nexus train text` and `nexus train vision` run: the NIWT recorder and shard verification, the collapse,
`_Context`'s local and trajectory losses, the checkpointing trainer, `prefix_ce` through the frozen LLM, all
in bf16 autocast on CUDA. `tiny` runs on a CPU in seconds (tests); the seed shapes want a GPU.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.consolidation import projector as pj
from nexus_engine.research.agid import bridges as br
from nexus_engine.research.agid import shards, trajectory
from nexus_engine.research.agid.teacher import Teacher, autocast
from nexus_engine.research.agid.text import TextConfig, _Context
from nexus_engine.research.agid.trainer import TrainConfig, TrainLog, train
from nexus_engine.research.agid.vision import prefix_ce
from nexus_engine.research.niwt import collapse_model
from nexus_engine.research.niwt.collapse import speed as decode_speed
from nexus_engine.research.niwt.speed import ARCHS, random_model


def spread_removal(n_layers: int, n: int) -> list[int]:
    """n layers to remove, every other one downward from the second-to-last: many cuts, none at either end."""
    picks = list(range(n_layers - 2, 0, -2))[:n]
    if len(picks) < n:
        raise ValueError(f"cannot spread {n} removals over {n_layers} layers")
    return sorted(picks)


def train_speed(arch: str = "tiny", device: str = "cpu", dtype: str = "fp32", *, windows: int = 16, seq: int = 512,
                batch: int = 4, remove: float = 0.25, rank: int = 64, local_steps: int = 40, steps: int = 20,
                projector_steps: int = 20, projector_batch: int = 8, layers: int | None = None,
                work: Path | None = None, progress: Any = None) -> dict[str, Any]:
    """Time and check each AGID training stage on a random-weight `arch` teacher; returns the numbers."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = random_model(arch, device, dtype, layers)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = TowerSpec(name=f"random-{arch}", kind="llm", backend="transformers", capabilities=(),
                     source=Source(path=f"/random/{arch}"), quantization=dtype)
    teacher = Teacher(model, None, spec, "random-seed-0")
    info = teacher.info
    n_layers, hidden = info["num_layers"], info["hidden_size"]
    out: dict[str, Any] = {"arch": arch, "config": ARCHS[arch][1] | ({"num_hidden_layers": layers} if layers else {}),
                           "device": torch.cuda.get_device_name(0) if cuda else "cpu", "dtype": dtype,
                           "torch": torch.__version__, "windows": windows, "seq": seq, "batch": batch, "rank": rank,
                           "build_seconds": time.perf_counter() - t0}
    ids = torch.randint(0, model.config.vocab_size, (windows, seq), generator=torch.Generator().manual_seed(1))
    removed = spread_removal(n_layers, math.ceil(remove * n_layers))
    kept = [i for i in range(n_layers) if i not in removed]
    cuts = br.cuts_of(kept, n_layers)
    need = sorted({c.first for c in cuts} | {kept[j] for j in range(cuts[0].at, len(kept))} | {n_layers})
    out["mask"] = {"removed": removed, "kept": len(kept), "cuts": len(cuts), "recorded_layers": len(need)}

    with tempfile.TemporaryDirectory(dir=work) as tmp:  # activations of a 4B teacher: ~40 MB per layer here
        folder = Path(tmp) / "activations"
        data = {"name": "random", "hash": f"random-{windows}x{seq}-seed1", "description": "uniform random tokens"}
        t = time.perf_counter()
        with torch.inference_mode(), autocast(dev):
            shards.record(model, ids, folder, info=info, dataset=data, layers=need)
        out["record_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        shards.verify(folder, info, data["hash"])
        _, acts = shards.load_windows(folder, need, seq)
        out["load_seconds"] = time.perf_counter() - t
        out["activation_bytes"] = sum(a.numel() * a.element_size() for a in acts.values())
    _say(progress, f"recorded {len(need)} layers of {windows}x{seq} tokens in {out['record_seconds']:.1f} s")

    student = copy.deepcopy(model)
    collapse_model(student, kept)
    stats = {i: trajectory.standard_stats(acts[i]) for i in need}
    cfg = TextConfig(batch=batch, local_rows=2048, kl_weight=1.0, seed=0, device=device)
    ctx = _Context(cfg, teacher, student, cuts, ids, acts, stats, dev, kept)
    bridged = br.Bridged(student, cuts, br.make_bridges(cuts, hidden, {c.name: rank for c in cuts}))
    stages = {"local": (ctx.local_loss(bridged), TrainConfig(steps=local_steps, lr=3e-3, warmup=2, log_every=10)),
              "agid": (ctx.trajectory_loss(hidden_w=1.0, kl_w=1.0), TrainConfig(steps=steps, lr=1e-3, warmup=2,
                                                                                 log_every=5))}
    for name, (loss_fn, tcfg) in stages.items():
        out[name] = _stage(name, bridged.parameters(), loss_fn, tcfg, batch * seq if name == "agid" else 0, cuda,
                           progress)
    out["bridge_params"] = sum(p.numel() for p in bridged.parameters().values())
    with torch.inference_mode():  # on a GPU a 16-token decode is launch-bound noise: longer, best of more
        kw = dict(prompt=512, decode=64, repeats=5) if cuda else {}
        out["decode"] = {"teacher": decode_speed(model, **kw), "student": decode_speed(student, **kw)}
    out["decode"]["prefill_speedup"] = out["decode"]["student"]["prefill_tok_s"] / out["decode"]["teacher"][
        "prefill_tok_s"]
    bridged.remove()
    del student, ctx, acts
    if projector_steps:
        out["projector"] = _projector(model, dev, hidden, projector_steps, projector_batch, cuda, progress)
    if cuda:
        out["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return out


def _projector(model: Any, dev: torch.device, hidden: int, steps: int, batch: int, cuda: bool,
               progress: Any) -> dict[str, Any]:
    """A vision-width projector (SigLIP-like 1152 -> latent 512 -> hidden) learning fixed feature -> answer pairs."""
    g = torch.Generator().manual_seed(2)
    vocab = model.config.vocab_size
    items = [(torch.randn(pj.TOKENS, 1152, generator=g),
              ((torch.randint(0, vocab, (24,), generator=g).tolist(), torch.randint(0, vocab, (8,), generator=g)
                .tolist()), torch.randint(0, vocab, (12,), generator=g).tolist())) for _ in range(4 * batch)]
    emb_rms = float(model.get_input_embeddings().weight.float().pow(2).mean().sqrt())
    proj = pj.Projector(1152, 512, hidden, pj.TOKENS, emb_rms).to(dev)

    def loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        pick = torch.randint(0, len(items), (batch,), generator=torch.Generator().manual_seed(step))
        rows = [items[int(i)] for i in pick]
        ce = prefix_ce(model, proj(torch.stack([f for f, _ in rows]).to(dev)), [r for _, r in rows], 0)
        return ce, {"ce": float(ce.detach())}

    params = dict(proj.named_parameters())
    tokens = batch * (24 + pj.TOKENS + 8 + 12)
    res = _stage("projector", params, loss, TrainConfig(steps=steps, lr=2e-3, warmup=2, log_every=5), tokens, cuda,
                 progress)
    return res | {"params": sum(p.numel() for p in params.values()), "tokens_per_step": tokens}


def _stage(name: str, params: dict[str, Any], loss_fn: Any, cfg: TrainConfig, tokens_per_step: int, cuda: bool,
           progress: Any) -> dict[str, Any]:
    """Train one stage; the first step (kernels, allocator) is timed apart from the steady ones."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_step: int) -> None:
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    log: TrainLog = train(name, params, loss_fn, cfg, progress=progress, on_step=tick)
    steady = times[1:] or times
    head = [r["loss"] for r in log.curve[:5]]
    first = sum(head) / len(head)  # TrainLog.last is the mean of the last 5 steps: compare like with like
    res: dict[str, Any] = {"steps": cfg.steps, "first_step_seconds": times[0], "seconds_per_step":
                           sorted(steady)[len(steady) // 2], "loss_first5": first, "loss_last5": log.last,
                           "loss_fell": log.last < first}
    if tokens_per_step:
        res["tokens_per_second"] = tokens_per_step / res["seconds_per_step"]
    if cuda:
        res["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    _say(progress, f"{name}: {res['seconds_per_step'] * 1000:.0f} ms/step, loss {first:.4f} -> {log.last:.4f}")
    return res


def _say(progress: Any, msg: str) -> None:
    if progress:
        progress(msg)
