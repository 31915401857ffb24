"""Perturbation sweep with a prefix-activation cache.

A variant of the model removes some layers (`skip`) and/or zeroes the attention or MLP of others. Everything
before its first changed layer is the unperturbed model, so per batch the lab runs the full model once,
keeps the hidden state entering every layer (`stack.layer_inputs`), and runs each variant only from its first
changed layer on, with that stored state injected. A variant starting at layer i costs L - i layers instead of L:
averaged over a sweep, about half a forward pass (plus the logits of the scored positions).

`prefix=False` runs every variant from the embeddings (the naive sweep): the tests check both give the same
metrics, and the lab times both. Loops are batch-outer, variant-inner, so the cache holds one batch at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from nexus_engine.research.niwt import stack as st
from nexus_engine.research.niwt.metrics import Task


@dataclass(frozen=True)
class Variant:
    """Layers removed and sub-blocks zeroed, by original layer index."""

    name: str
    skip: frozenset[int] = frozenset()
    zero_attn: frozenset[int] = frozenset()
    zero_mlp: frozenset[int] = frozenset()

    @property
    def start(self) -> int:
        """The first changed layer (a variant that changes nothing starts past the last layer: 10**9)."""
        return min(self.skip | self.zero_attn | self.zero_mlp, default=10**9)

    def kept(self, n_layers: int) -> list[int]:
        return [i for i in range(n_layers) if i not in self.skip]


def skip_variant(layers: Iterable[int], name: str | None = None) -> Variant:
    s = frozenset(layers)
    return Variant(name or "skip " + ",".join(map(str, sorted(s))), skip=s)


def perturbations(n_layers: int, widths: Iterable[int] = (1, 2, 3, 4), parts: bool = True) -> list[Variant]:
    """Every single layer and contiguous block of each width skipped; each layer's attention and MLP zeroed."""
    out = [Variant(f"skip {i}" if w == 1 else f"skip {i}-{i + w - 1}", skip=frozenset(range(i, i + w)))
           for w in widths for i in range(n_layers - w + 1)]
    if parts:
        out += [Variant(f"attn0 {i}", zero_attn=frozenset({i})) for i in range(n_layers)]
        out += [Variant(f"mlp0 {i}", zero_mlp=frozenset({i})) for i in range(n_layers)]
    return out


@contextmanager
def applied(stack: st.Stack, v: Variant, hs: list[torch.Tensor] | None) -> Iterator[int]:
    """Make `stack.model` compute variant `v`; with `hs` (prefix cache) start at v.start. Yields layers run."""
    with ExitStack() as es:
        first = min(v.start, stack.n_layers)  # = n_layers when nothing changes: only the final norm runs again
        start = first if hs is not None else 0
        run = [stack.layers[i] for i in range(start, stack.n_layers) if i not in v.skip]
        for i in v.zero_attn:
            es.enter_context(st.zeroed(stack.layers[i], "attn"))
        for i in v.zero_mlp:
            es.enter_context(st.zeroed(stack.layers[i], "mlp"))
        es.enter_context(st.layer_list(stack, run))
        if hs is not None:
            es.enter_context(st.inject(run[0] if run else stack.norm, hs[first]))
        yield len(run)


@dataclass
class SweepResult:
    base: dict[str, dict[str, float]]  # task -> metrics of the full model
    variants: dict[str, dict[str, dict[str, float]]]  # variant -> task -> metrics
    seconds: dict[str, float]  # "base", "variants" (all variants, all batches)
    layer_calls: int  # decoder-layer forwards actually run for the variants (analytic cost)
    naive_layer_calls: int  # what the same variants cost from the embeddings
    similarity: dict[str, Any] = field(default_factory=dict)  # angular distances / block influence


@torch.inference_mode()
def run_variants(stack: st.Stack, tasks: list[Task], variants: list[Variant], prefix: bool = True,
                 similarity: bool = False, progress: Any = None) -> SweepResult:
    """Metrics of the full model and of every variant on every task (see module docstring)."""
    sums: dict[str, dict[str, dict[str, float]]] = {v.name: {} for v in variants}
    base_sums: dict[str, dict[str, float]] = {}
    secs = {"base": 0.0, "variants": 0.0}
    calls = naive = 0
    sim = _Similarity(stack.n_layers) if similarity else None
    for task in tasks:
        for bi, b in enumerate(task.batches):
            ids = b.input_ids.to(stack.device)
            t0 = time.perf_counter()
            hs, base = st.layer_inputs(stack, ids, b.keep.to(stack.device))
            secs["base"] += time.perf_counter() - t0
            _add(base_sums.setdefault(task.name, {}), task.score(base, base, _dev(b, base.device)))
            if sim is not None:
                sim.add(hs)
            t0 = time.perf_counter()
            for v in variants:
                with applied(stack, v, hs if prefix else None) as ran:
                    logits = st.logits_at(stack.model, ids, b.keep.to(stack.device))
                calls += ran
                naive += len(v.kept(stack.n_layers))
                _add(sums[v.name].setdefault(task.name, {}), task.score(logits, base, _dev(b, base.device)))
            secs["variants"] += time.perf_counter() - t0
            task.release()
            del hs
            if progress:
                progress(f"{task.name} batch {bi + 1}/{len(task.batches)}: {len(variants)} variants")
    final = {t.name: t for t in tasks}
    return SweepResult(
        base={k: final[k].finalize(s) for k, s in base_sums.items()},
        variants={v: {k: final[k].finalize(s) for k, s in per.items()} for v, per in sums.items()},
        seconds=secs, layer_calls=calls, naive_layer_calls=naive,
        similarity=sim.result() if sim is not None else {})


def _add(acc: dict[str, float], s: dict[str, float]) -> None:
    for k, v in s.items():
        acc[k] = acc.get(k, 0.0) + v


def _dev(b: Any, device: torch.device) -> Any:
    if b.targets.device == device:
        return b
    return replace(b, keep=b.keep.to(device), targets=b.targets.to(device), mask=b.mask.to(device))


class _Similarity:
    """Angular distance between layer inputs h_i and h_j (Gromov et al.), averaged over tokens, for every
    pair up to 8 layers apart; ShortGPT's block influence of layer i is 1 - cos(h_i, h_i+1)."""

    SPAN = 8

    def __init__(self, n_layers: int) -> None:
        self.n = n_layers
        self.sum = torch.zeros(n_layers + 1, self.SPAN + 1, dtype=torch.float64)  # [i, gap]
        self.cos1 = torch.zeros(n_layers, dtype=torch.float64)  # sum of cos(h_i, h_i+1)
        self.count = 0

    def add(self, hs: list[torch.Tensor]) -> None:
        flat = [h.reshape(-1, h.shape[-1]).float() for h in hs]  # [N, D] each
        for i in range(self.n + 1):
            for gap in range(1, self.SPAN + 1):
                if i + gap <= self.n:
                    cos = torch.nn.functional.cosine_similarity(flat[i], flat[i + gap], dim=-1).clamp(-1, 1)
                    self.sum[i, gap] += float((torch.arccos(cos) / torch.pi).sum())
                    if gap == 1:
                        self.cos1[i] += float(cos.sum())
        self.count += flat[0].shape[0]

    def result(self) -> dict[str, Any]:
        ang = (self.sum / max(self.count, 1)).tolist()
        gaps = range(1, self.SPAN + 1)
        return {"angular_distance": {str(g): [ang[i][g] for i in range(self.n + 1 - g)] for g in gaps},
                "block_influence": (1 - self.cos1 / max(self.count, 1)).tolist(),
                "tokens": self.count}


@torch.inference_mode()
def compare(full: Any, student: Any, tasks: list[Task]) -> dict[str, dict[str, float]]:
    """Metrics of a separate `student` model (healed, say) against `full`, batch by batch."""
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        acc: dict[str, float] = {}
        for b in task.batches:
            dev = full.get_input_embeddings().weight.device
            ids, keep = b.input_ids.to(dev), b.keep.to(dev)
            base = st.logits_at(full, ids, keep)
            _add(acc, task.score(st.logits_at(student, ids, keep), base, _dev(b, base.device)))
            task.release()
        out[task.name] = task.finalize(acc)
    return out
