"""Which layers the AGID student drops: a NIWT bitmask, given or chosen here.

Given (`--bitmask FILE`): validated by the NIWT schema and tied to the teacher (tower, layer count, revision).
Chosen: the lab's bitmasks target 97 % retention *without* adapters (about 12 % of the layers on the starter
model); AGID asks for more (the issue's goal is >= 25 %), so this picks `n` layers on the NIWT `select` split
with the lab's own tools: a single-layer skip sweep (prefix cache), then greedy growth re-scoring the
`candidates` least harmful additions each round, and writes the result as a valid NIWT bitmask
(strategy "greedy", chosen on `select`; AGID reports on `eval`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nexus_engine.research.agid.errors import RevisionMismatchError
from nexus_engine.research.agid.teacher import Teacher, check_teacher
from nexus_engine.research.niwt import bitmask as bm
from nexus_engine.research.niwt import decoder_stack, kept_layers, load_bitmask, run_variants, save_bitmask
from nexus_engine.research.niwt.metrics import LMTask
from nexus_engine.research.niwt.sweep import skip_variant


def load_checked(path: Path, teacher: Teacher) -> dict[str, Any]:
    """A bitmask file, refused when it was made for another tower or other weights."""
    doc = load_bitmask(path)
    info = teacher.info
    if doc["teacher"]["tower"] != info["tower"]:
        raise RevisionMismatchError(f"{path} is a bitmask for tower {doc['teacher']['tower']!r}, not {info['tower']!r}",
                                    "pass the bitmask the NIWT lab wrote for this tower")
    check_teacher(doc["teacher"], info, f"bitmask {path}")
    return doc


def choose(teacher: Teacher, task: LMTask, n_remove: int, candidates: int = 4,
           progress: Any = None) -> tuple[list[int], dict[str, Any]]:
    """(removed layers, scores) — greedy on `task` (the select split)."""
    stack = decoder_stack(teacher.model)
    n = stack.n_layers
    singles = run_variants(stack, [task], [skip_variant([i], f"skip {i}") for i in range(n)], prefix=True)
    base = singles.base[task.name]["nll"]
    cost = [singles.variants[f"skip {i}"][task.name]["nll"] - base for i in range(n)]
    ranked = sorted(range(n), key=lambda i: cost[i])
    chosen: tuple[int, ...] = ()
    path = []
    for k in range(1, n_remove + 1):
        options = [tuple(sorted((*chosen, i))) for i in ranked if i not in chosen][:candidates]
        r = run_variants(stack, [task], [skip_variant(o) for o in options], prefix=True)
        scored = {o: r.variants[skip_variant(o).name][task.name]["nll"] - base for o in options}
        chosen = min(options, key=lambda o: scored[o])
        path.append({"n": k, "layers": list(chosen), "delta_nll": scored[chosen]})
        if progress:
            progress(f"mask: removing {k}/{n_remove} layers: {list(chosen)} (+{scored[chosen]:.3f} nats)")
    return list(chosen), {"skip_delta_nll": cost, "greedy": path, "base": singles.base[task.name]}


def write(teacher: Teacher, task: LMTask, removed: list[int], scores: dict[str, Any], dest: Path) -> dict[str, Any]:
    """A valid NIWT bitmask for `removed` (metrics measured on the select split by `choose`)."""
    n = teacher.info["num_layers"]
    last = scores["greedy"][-1] if scores["greedy"] else {"delta_nll": 0.0}
    full = {"text": {k: float(v) for k, v in scores["base"].items()}}
    collapsed_ppl = math.exp(scores["base"]["nll"] + last["delta_nll"])
    doc = bm.new_bitmask(
        teacher=teacher.info,
        task={"name": task.name, "decision_metric": "ppl", "target_retention": 0.0, "dataset_hash": task.dataset_hash,
              "description": f"select split: {task.description}"},
        skipped=removed, strategy="greedy",
        importance={"method": "single-layer skip sweep on the select split (prefix cache); delta = variant - full",
                    "scores": {"skip_delta_nll": [float(x) for x in scores["skip_delta_nll"]]}},
        metrics={"full": full, "collapsed": {"text": {"ppl": collapsed_ppl}},
                 "retention": {"text": full["text"]["ppl"] / collapsed_ppl}, "split": "select"},
        prov=bm.provenance(command=f"nexus train text --tower {teacher.spec.name} --remove {len(removed)}",
                           data={"select/text": task.dataset_hash},
                           notes=f"AGID student mask: {len(removed)} of {n} layers, greedy on select without "
                                 "adapters; AGID's bridges are trained on the heal split, reported on eval"))
    save_bitmask(doc, dest)
    return doc


def kept_of(doc: dict[str, Any]) -> list[int]:
    return kept_layers(doc)
