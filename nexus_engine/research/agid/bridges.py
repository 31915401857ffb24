"""Bridge adapters: what a collapsed student adds at each cut so its residual stream follows the teacher's.

A cut is a maximal run of removed layers a..b. The teacher maps h_a (entering layer a) to h_{b+1}; the student
goes straight from a to the next kept layer, so a bridge there learns the missing update:

    bridge(h) = h + up(silu(down(rmsnorm(h))))      down: [r, D], up: [D, r] (zeros: starts as the plain collapse)

r comes from the spectral analysis of what the removed block writes: k90 of the standardized PCA of
h_{b+1} - h_a (the NIWT lab's `spectrum`), clamped to [min_rank, max_rank]. A bridge is a forward pre-hook on
the student's next kept layer (or on the final norm when the cut runs to the last layer): no layer is
re-implemented, masks and rotary embeddings stay the model's, and the KV cache works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nexus_engine.research.niwt import decoder_stack
from nexus_engine.research.niwt.spectral import spectrum


@dataclass(frozen=True)
class Cut:
    first: int  # first removed layer (teacher index): the bridge's input is the residual entering it
    last: int  # last removed layer: the bridge's target is the residual entering last + 1
    at: int  # student position whose input the bridge rewrites (len(kept) = the final norm)

    @property
    def name(self) -> str:
        return f"{self.first}-{self.last}"


def cuts_of(kept: list[int], n_layers: int) -> list[Cut]:
    """The runs of removed layers, with the student position right after each."""
    removed = [i for i in range(n_layers) if i not in set(kept)]
    out: list[Cut] = []
    for i in removed:
        if out and out[-1].last == i - 1:
            out[-1] = Cut(out[-1].first, i, out[-1].at)
        else:
            out.append(Cut(i, i, sum(1 for k in kept if k < i)))
    return out


class Bridge(nn.Module):
    def __init__(self, hidden: int, rank: int, eps: float = 1e-5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.eps = eps
        self.norm = nn.Parameter(torch.ones(hidden))
        self.down = nn.Parameter(torch.randn(rank, hidden, generator=g) / hidden ** 0.5)
        self.up = nn.Parameter(torch.zeros(hidden, rank))

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.norm
        return (h.float() + F.silu(x @ self.down.T) @ self.up.T).to(h.dtype)


class Bridged:
    """Bridges attached to a collapsed student by forward pre-hooks; `remove()` detaches them."""

    def __init__(self, student: nn.Module, cuts: list[Cut], bridges: dict[str, Bridge]) -> None:
        self.student, self.cuts, self.bridges = student, cuts, bridges
        stack = decoder_stack(student)
        modules = [*stack.layers, stack.norm]
        self.handles = [modules[c.at].register_forward_pre_hook(_rewrite(bridges[c.name]), with_kwargs=True)
                        for c in cuts]
        device = stack.device
        for b in bridges.values():
            b.to(device)
        # registered as a submodule so .to()/state_dict see them; the hooks call them
        student.agid_bridges = nn.ModuleDict(bridges)

    def parameters(self) -> dict[str, nn.Parameter]:
        return {f"{name}.{k}": p for name, b in self.bridges.items() for k, p in b.named_parameters()}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().float().cpu() for k, p in self.parameters().items()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, p in self.parameters().items():
                p.copy_(tensors[k].to(p.device, p.dtype))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        if hasattr(self.student, "agid_bridges"):
            del self.student.agid_bridges


def _rewrite(bridge: Bridge) -> Any:
    def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (bridge(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": bridge(kwargs["hidden_states"])}
    return pre_hook


def make_bridges(cuts: list[Cut], hidden: int, ranks: dict[str, int], seed: int = 0,
                 eps: float = 1e-5) -> dict[str, Bridge]:
    return {c.name: Bridge(hidden, ranks[c.name], eps, seed=seed * 1000 + i) for i, c in enumerate(cuts)}


def spectral_rank(delta: torch.Tensor, min_rank: int = 8, max_rank: int = 128, key: str = "k90") -> dict[str, Any]:
    """Rank for a bridge from the update its cut must reproduce: delta [n, D] = h_{b+1} - h_a, standardized PCA."""
    x = delta.double()
    x = x - x.mean(0)
    cov = x.T @ x / max(len(x) - 1, 1)
    stats = spectrum(cov)
    return {"rank": int(min(max(stats[key], min_rank), max_rank)), "k90": stats["k90"], "k95": stats["k95"],
            "k99": stats["k99"], "effective_rank": stats["effective_rank"], "key": key}
