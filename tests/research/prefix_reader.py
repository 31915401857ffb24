"""A tiny random LM first taught to read a prefix at all (LLM and a throwaway projector trained together), so
that the projector tests measure the projector, not a model that ignores any prefix."""

from __future__ import annotations

from typing import Any

import torch


def teach_to_read(model: Any, loss: Any, throwaway: torch.nn.Module, steps: int = 150, lr: float = 3e-3) -> None:
    opt = torch.optim.AdamW([*model.parameters(), *throwaway.parameters()], lr=lr)
    for step in range(steps):
        value, _ = loss(step)
        opt.zero_grad()
        value.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
