"""The one training loop AGID uses: deterministic, checkpointed, resumable, and loud about NaNs.

- Deterministic: a job's batch is a pure function of (seed, step) and parameters start from a seeded init, so
  a run needs no RNG state to resume and two runs with one seed give the same weights (same device and threads).
- Checkpoints every `checkpoint_every` steps (and on Ctrl-C/SIGTERM): trainable tensors and AdamW's state as
  safetensors, then a JSON with the step, the loss curve so far and a fingerprint of config + data, each
  written atomically, the JSON last. Resuming loads the newest complete checkpoint whose fingerprint matches,
  so an interrupted run ends with exactly the weights and curve of an uninterrupted one.
- A loss or gradient that is not finite raises NaNLossError before the optimizer touches the weights.
- Progress: a line every `log_every` steps (step, loss, steps/s, time left) to the `progress` callback.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nexus_engine.consolidation.adapters import file_sha256, write_json
from nexus_engine.research.agid.errors import NaNLossError, ResumeMismatchError, TrainingInterrupted

LossFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]  # step -> (loss, named parts for the curve)
KEEP_CHECKPOINTS = 2


@dataclass
class TrainConfig:
    steps: int = 100
    lr: float = 1e-3
    warmup: int = 5  # linear warm-up steps, then cosine decay to lr_floor * lr
    lr_floor: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 25
    log_every: int = 5


@dataclass
class TrainLog:
    name: str
    steps: int
    curve: list[dict[str, float]] = field(default_factory=list)  # one row per step: step, loss, parts, lr
    seconds: float = 0.0
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def first(self) -> float:
        return self.curve[0]["loss"] if self.curve else float("nan")

    @property
    def last(self) -> float:
        tail = self.curve[-5:]
        return sum(r["loss"] for r in tail) / len(tail) if tail else float("nan")


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * t)))


def fingerprint(*parts: Any) -> str:
    """sha256 of the JSON of `parts`: config and data hashes a checkpoint must match to be resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(name: str, params: dict[str, nn.Parameter], loss_fn: LossFn, cfg: TrainConfig, *,
          checkpoints: Path | None = None, fingerprint_: str = "", resume: bool = True,
          progress: Callable[[str], None] | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainLog:
    """Train `params` (name -> parameter, updated in place) for cfg.steps steps of `loss_fn(step)`.

    checkpoints: a folder for this job's checkpoints (None: no checkpoints, no resume). on_step(step) runs after
    each finished step (the tests interrupt training from it).
    """
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    log = TrainLog(name, cfg.steps)
    start = 0
    if checkpoints is not None and resume:
        start = _restore(checkpoints, name, params, opt, log, fingerprint_)
        log.resumed_from = start
        if start and progress:
            progress(f"{name}: resumed from the checkpoint at step {start}/{cfg.steps}")
    t0, done_here = time.perf_counter(), 0
    stop = _StopAtBoundary()
    try:
        for step in range(start, cfg.steps):
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, parts = loss_fn(step)
            if not torch.isfinite(loss.detach()).all():
                raise NaNLossError(f"{name}: the loss is {float(loss.detach())} at step {step}",
                                   "lower --lr, check the data for inf/NaN values, or train in float32", step=step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
            if not torch.isfinite(norm):
                raise NaNLossError(f"{name}: a gradient is not finite at step {step} (norm {float(norm)})",
                                   "lower --lr or train in float32", step=step)
            opt.step()
            log.curve.append({"step": step, "loss": float(loss.detach()), "lr": lr,
                              **{k: float(v) for k, v in parts.items()}})
            done_here += 1
            if progress and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                rate = done_here / max(time.perf_counter() - t0, 1e-9)
                left = (cfg.steps - step - 1) / rate
                progress(f"{name} step {step + 1}/{cfg.steps}: loss {log.curve[-1]['loss']:.4f} "
                         f"({rate:.2f} steps/s, {_fmt_s(left)} left)")
            if checkpoints is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                _save(checkpoints, name, step + 1, params, opt, log, fingerprint_)
            if on_step is not None:
                on_step(step)
            if stop.requested:
                raise KeyboardInterrupt
    except KeyboardInterrupt as e:
        finished = len(log.curve)  # steps whose update was applied (the interrupted one never was)
        if checkpoints is not None and finished > start:
            _save(checkpoints, name, finished, params, opt, log, fingerprint_)
        saved = _latest_step(checkpoints, name) if checkpoints is not None else 0
        raise TrainingInterrupted(f"{name}: training interrupted after step {finished} of {cfg.steps}",
                                  "run the same command again to resume from the last checkpoint"
                                  if checkpoints is not None else "run it again", step=saved) from e
    finally:
        stop.restore()
    if checkpoints is not None and start < cfg.steps:  # a finished job is skipped when a later one resumes
        _save(checkpoints, name, cfg.steps, params, opt, log, fingerprint_)
    log.seconds = time.perf_counter() - t0
    return log


def clear_checkpoints(checkpoints: Path, name: str) -> None:
    for p in checkpoints.glob(f"{name}-step-*"):
        p.unlink(missing_ok=True)


class _StopAtBoundary:
    """Ctrl-C and SIGTERM only set a flag; the loop stops after the step in flight, so a checkpoint never holds
    an optimizer step applied to some tensors and not others. (Signals can be caught only in the main thread.)"""

    def __init__(self) -> None:
        self.requested = False
        self.old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: the user really wants out now
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------ checkpoints
def _stem(name: str, step: int) -> str:
    return f"{name}-step-{step:06d}"


def _save(folder: Path, name: str, step: int, params: dict[str, nn.Parameter], opt: torch.optim.Optimizer,
          log: TrainLog, fp: str) -> None:
    import os

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, p in params.items():
        tensors[f"param.{key}"] = p.detach().cpu().clone()
        state = opt.state.get(p, {})
        for s in ("exp_avg", "exp_avg_sq", "step"):
            if s in state:
                tensors[f"adam.{key}.{s}"] = torch.as_tensor(state[s]).detach().cpu().clone().reshape(
                    state[s].shape if torch.is_tensor(state[s]) else ())
    stem = _stem(name, step)
    tmp = folder / f".{stem}.safetensors.tmp-{os.getpid()}"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / f"{stem}.safetensors")
    write_json(folder / f"{stem}.json", {"name": name, "step": step, "fingerprint": fp, "curve": log.curve,
                                         "sha256": file_sha256(folder / f"{stem}.safetensors")})
    old = sorted(folder.glob(f"{name}-step-*.json"))[:-KEEP_CHECKPOINTS]
    for j in old:
        j.unlink(missing_ok=True)
        j.with_suffix(".safetensors").unlink(missing_ok=True)


def _latest_step(folder: Path, name: str) -> int:
    steps = [int(p.stem.rsplit("-", 1)[1]) for p in folder.glob(f"{name}-step-*.json")]
    return max(steps, default=0)


def _restore(folder: Path, name: str, params: dict[str, nn.Parameter], opt: torch.optim.Optimizer,
             log: TrainLog, fp: str) -> int:
    """Load the newest complete checkpoint; 0 when there is none. A damaged newest one falls back to the one
    before it; one from another configuration is an error (it would silently mix two runs)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for meta_path in sorted(folder.glob(f"{name}-step-*.json"), reverse=True):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            weights = meta_path.with_suffix(".safetensors")
            if file_sha256(weights) != meta["sha256"]:
                continue
            tensors = load_file(str(weights))
        except (OSError, ValueError, KeyError, SafetensorError):
            continue
        if meta.get("fingerprint") != fp:
            raise ResumeMismatchError(f"{meta_path} was written by a run with another configuration or other data",
                                      "pass --fresh to start over, or rerun with the original settings")
        with torch.no_grad():
            for key, p in params.items():
                p.copy_(tensors[f"param.{key}"].to(p.device, p.dtype))
                state = {s: tensors[f"adam.{key}.{s}"].to(p.device) for s in ("exp_avg", "exp_avg_sq", "step")
                         if f"adam.{key}.{s}" in tensors}
                if state:
                    state["step"] = state["step"].float().cpu()  # AdamW keeps its step counter on the CPU
                    opt.state[p] = state
        log.curve = list(meta["curve"])
        return int(meta["step"])
    return 0


def _fmt_s(s: float) -> str:
    s = max(int(s), 0)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
