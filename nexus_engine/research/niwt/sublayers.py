"""Sub-layer collapse: how many attention (or MLP) blocks can go, where whole layers cannot.

Every layer's attention and MLP is ranked by the KL of zeroing it alone on the *select* split; then the k least
important of one kind are zeroed together (k = 1, 2, 3, …) and every task is measured on the disjoint *eval*
split. This is the finer-grained answer to "where does the seed's 97 % hold": a block whose output is zero adds
nothing to the residual stream, which is what removing it from the forward computes (the model's own forward runs
with a zero stand-in module: sweep.Variant), and an attention block is the cheaper half to lose in deep models
(He et al., "What matters in transformers? Not all attention is needed").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nexus_engine.research.niwt import stack as st
from nexus_engine.research.niwt.metrics import Task, retention
from nexus_engine.research.niwt.sweep import Variant, run_variants

PARTS = ("attn", "mlp")


def _variant(part: str, layers: Sequence[int], name: str) -> Variant:
    return Variant(name, zero_attn=frozenset(layers)) if part == "attn" else Variant(name, zero_mlp=frozenset(layers))


def sublayer_curves(stack: st.Stack, select: dict[str, Task], evaluate: dict[str, Task], decide: str = "text",
                    ks: Sequence[int] = (1, 2, 3, 4, 6, 8), target: float = 0.97, progress: Any = None
                    ) -> dict[str, Any]:
    """Rank sub-blocks on select[decide], zero the k least important of each kind, measure every eval task."""
    n = stack.n_layers
    singles = [_variant(p, [i], f"{p}0 {i}") for p in PARTS for i in range(n)]
    sel = run_variants(stack, [select[decide]], singles, progress=progress)
    tasks = list(evaluate.values())
    out: dict[str, Any] = {"decide": decide, "target": target, "num_layers": n, "ranking": {}, "curves": {},
                           "largest_k_at_target": {}}
    for part in PARTS:
        kl = {i: sel.variants[f"{part}0 {i}"][decide]["kl"] for i in range(n)}
        order = sorted(range(n), key=lambda i: (kl[i], i))
        out["ranking"][part] = [{"layer": i, "select_kl": kl[i]} for i in order]
        variants = [_variant(part, order[:k], f"{part} x{k}") for k in ks if 0 < k <= n]
        ev = run_variants(stack, tasks, variants, progress=progress)
        curve = []
        for v in variants:
            got = ev.variants[v.name]
            layers = v.zero_attn | v.zero_mlp
            curve.append({"k": len(layers), "zeroed": sorted(layers),
                          "retention": {t.name: retention(t, ev.base[t.name], got[t.name]) for t in tasks},
                          "kl": {t.name: got[t.name].get("kl") for t in tasks},
                          "top1_agreement": {t.name: got[t.name].get("top1_agreement") for t in tasks}})
        out["curves"][part] = curve
        out["largest_k_at_target"][part] = {t.name: _largest(curve, t.name, target) for t in tasks}
    out["full"] = ev.base
    return out


def _largest(curve: list[dict[str, Any]], task: str, target: float) -> int:
    """The largest k with retention >= target at every measured k up to it (0: not even the first)."""
    best = 0
    for row in curve:
        r = row["retention"][task]
        if r != r or r < target:  # NaN (no usable full metric) counts as a miss
            break
        best = row["k"]
    return best
