"""Which layers to remove: candidate sets of n layers by five strategies, scored on the *select* split.

ranked (single-skip loss), ranked_kl (single-skip KL), block_influence (ShortGPT: 1 - cos between a layer's input
and output), block (the best contiguous block: measured in the sweep, else Gromov et al.'s angular distance) and
greedy (grow the set a layer at a time, re-measuring the few least harmful). The lab keeps, for each n, the
best-scoring set (lab.py); every retention it reports is then measured on the eval split.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nexus_engine.research.niwt import stack as st
from nexus_engine.research.niwt.metrics import LMTask, Task, retention
from nexus_engine.research.niwt.sweep import SweepResult, run_variants, skip_variant

if TYPE_CHECKING:
    from nexus_engine.research.niwt.lab import LabConfig


def choose_layers(stack: st.Stack, task: Task, sweep: SweepResult, cfg: LabConfig) -> dict[str, Any]:
    """Candidate sets of n layers to remove (n = 1..max_remove) by five strategies, scored on `task` (select)."""
    L = stack.n_layers
    base = sweep.base[task.name]
    key = "nll" if isinstance(task, LMTask) else "accuracy"
    sign = 1 if key == "nll" else -1
    single = {i: sign * (sweep.variants[f"skip {i}"][task.name][key] - base[key]) for i in range(L)}
    ranked = sorted(range(L), key=lambda i: single[i])
    # KL to the full model is measured at every scored token against the full distribution, so on a small
    # sample it ranks layers with far less noise than the change in loss (which can even come out negative)
    kl = {i: sweep.variants[f"skip {i}"][task.name]["kl"] for i in range(L)}
    by_kl = sorted(range(L), key=lambda i: kl[i])
    bi = sweep.similarity["block_influence"]
    by_bi = sorted(range(L), key=lambda i: bi[i])
    ang = sweep.similarity["angular_distance"]
    top = min(cfg.max_remove, L - 1)
    cands: dict[str, dict[int, tuple[int, ...]]] = {"ranked": {}, "ranked_kl": {}, "block_influence": {},
                                                    "block": {}}
    for n in range(1, top + 1):
        cands["ranked"][n] = tuple(sorted(ranked[:n]))
        cands["ranked_kl"][n] = tuple(sorted(by_kl[:n]))
        cands["block_influence"][n] = tuple(sorted(by_bi[:n]))
        if n in cfg.widths:  # measured in the sweep: the block whose removal hurt the task least
            starts = range(L - n + 1)
            s = min(starts, key=lambda i: sign * (sweep.variants[_block(i, n)][task.name][key] - base[key]))
        elif str(n) in ang:  # Gromov et al.: the block whose input and output are closest in angle
            s = min(range(L - n + 1), key=lambda i: ang[str(n)][i])
        else:
            continue
        cands["block"][n] = tuple(range(s, s + n))
    unique = {v for c in cands.values() for v in c.values()}
    # a set's score is the worse of two estimates from the select split: its perplexity retention, and exp(-KL)
    # (the retention a calibrated model's KL predicts). On a few hundred tokens the change in loss alone can
    # make a layer look free (SmolLM2 layer 5: +0.018 nats, KL 0.11 on select; +0.09 nats on eval)
    ret: dict[tuple[int, ...], float] = {}
    kl_ret: dict[tuple[int, ...], float] = {}
    scored: dict[tuple[int, ...], float] = {}

    def measure(sets: set[tuple[int, ...]]) -> None:
        for s, (r, k) in _score_sets(stack, task, sets - set(scored), base).items():
            ret[s], kl_ret[s] = r, k
            scored[s] = min(_num(r), _num(k))

    measure(unique)
    greedy: dict[int, tuple[int, ...]] = {}
    chosen: tuple[int, ...] = ()
    for n in range(1, top + 1):  # grow the set one layer at a time, trying the least harmful few each time
        options = [tuple(sorted((*chosen, i))) for i in by_kl if i not in chosen][:cfg.greedy_candidates]
        measure(set(options))
        chosen = max(options, key=lambda o: scored[o])
        greedy[n] = chosen
    cands["greedy"] = greedy

    def row(n: int, s: tuple[int, ...]) -> dict[str, Any]:
        return {"n": n, "layers": list(s), "select_retention": ret[s], "select_kl_retention": kl_ret[s],
                "select_score": scored[s]}

    curves = {name: [row(n, s) for n, s in sorted(c.items())] for name, c in cands.items()}
    best = []
    for n in range(1, top + 1):
        options = [(scored[c[n]], name, c[n]) for name, c in cands.items() if n in c]
        _, name, s = max(options)
        best.append({**row(n, s), "strategy": name})
    return {"single_skip_cost": [single[i] for i in range(L)], "single_skip_kl": [kl[i] for i in range(L)],
            "curves": curves, "best": best, "evaluated_sets": len(scored),
            "score": "min(select retention, exp(-KL)) for likelihood tasks; select retention for accuracy tasks"}


def _block(i: int, n: int) -> str:
    return f"skip {i}" if n == 1 else f"skip {i}-{i + n - 1}"


def _score_sets(stack: st.Stack, task: Task, sets: set[tuple[int, ...]], base: dict[str, float]
                ) -> dict[tuple[int, ...], tuple[float, float]]:
    """{set: (retention, exp(-KL))} on `task`; accuracy tasks repeat their retention (a letter KL is no retention)."""
    if not sets:
        return {}
    vs = {s: skip_variant(s) for s in sets}
    r = run_variants(stack, [task], list(vs.values()))
    out = {}
    for s, v in vs.items():
        m = r.variants[v.name][task.name]
        ret = retention(task, base, m)
        out[s] = (ret, math.exp(-m["kl"]) if isinstance(task, LMTask) else ret)
    return out


def _num(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else 0.0
