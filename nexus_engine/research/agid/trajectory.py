"""Losses of activation-trajectory distillation, and the student forward they need.

Hidden states are compared in the teacher's standardized units (each feature centred and divided by its std
over the recorded tokens, as the lab's spectral analysis does), so the few huge-magnitude outlier features of
a residual stream do not own the loss:

    hidden_loss(s, t) = mean((z_s - z_t)^2) + (1 - cos(z_s, z_t))      z = (h - mean) / std

The student shares every layer before the first cut with the teacher, so its trajectory is run only from there:
the teacher's recorded residual entering the first removed layer is injected into the student's next kept layer
(the bridge then rewrites it), and hidden states are captured entering every later kept layer and the final
norm. Logits are computed only at the scored positions (`logits_to_keep`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nexus_engine.research.niwt import decoder_stack
from nexus_engine.research.niwt.stack import layer_list, logits_at


def standard_stats(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std [D] of [..., D] activations (float64 sums, std floored)."""
    x = acts.reshape(-1, acts.shape[-1])
    s = torch.zeros(x.shape[-1], dtype=torch.float64)
    ss = torch.zeros_like(s)
    for chunk in x.split(8192):
        c = chunk.double()
        s += c.sum(0)
        ss += (c * c).sum(0)
    n = max(len(x), 1)
    mean = s / n
    std = (ss / n - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.clamp(min=1e-3 * float(std.mean()) + 1e-6).float()


def hidden_loss(s: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    zs, zt = (s.float() - mean) / std, (t.float() - mean) / std
    return (zs - zt).pow(2).mean() + (1 - F.cosine_similarity(zs, zt, dim=-1)).mean()


def kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per position, averaged. Both [B, K, V]."""
    t = F.log_softmax(teacher_logits.float(), -1)
    s = F.log_softmax(student_logits.float(), -1)
    return (t.exp() * (t - s)).sum(-1).mean()


@contextmanager
def _inject_first(module: nn.Module, hidden: torch.Tensor) -> Iterator[None]:
    """Replace `module`'s input with `hidden`, before any other pre-hook (the bridge) sees it."""

    def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _capture(modules: dict[int, nn.Module], into: dict[int, torch.Tensor]) -> Iterator[None]:
    def grab(key: int) -> Any:
        def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            into[key] = args[0] if args else kwargs["hidden_states"]
        return pre_hook

    handles = [m.register_forward_pre_hook(grab(k), with_kwargs=True) for k, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def student_run(student: nn.Module, ids: torch.Tensor, start: int, h0: torch.Tensor,
                keep: torch.Tensor | None) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """Run the student's layers from position `start` with `h0` injected as their input.

    Returns ({student position j: hidden entering it (after any bridge)}, with len(layers) = the final norm's
    input; logits at `keep` [B, K, V] or None when keep is None).
    """
    stack = decoder_stack(student)
    layers = list(stack.layers)
    run = layers[start:]
    got: dict[int, torch.Tensor] = {}
    watch = {start + i: m for i, m in enumerate(run)} | {len(layers): stack.norm}
    with ExitStack() as es:
        es.enter_context(layer_list(stack, run))
        es.enter_context(_inject_first(run[0] if run else stack.norm, h0))
        es.enter_context(_capture(watch, got))
        if keep is None:
            body = stack.body
            body(input_ids=ids, use_cache=False)  # the decoder body only: no vocabulary projection
            logits = None
        else:
            logits = logits_at(student, ids, keep)
    return got, logits


@torch.no_grad()
def teacher_logits(teacher: nn.Module, ids: torch.Tensor, final: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The teacher's logits from its recorded final residual [B, T, D]: its own final norm and head, no layers."""
    stack = decoder_stack(teacher)
    with layer_list(stack, []), _inject_first(stack.norm, final.to(stack.device, stack.model.dtype)):
        return logits_at(teacher, ids, keep)
