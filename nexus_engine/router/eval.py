"""Scoring a router on labelled examples: accuracy, per-role precision/recall, confusion matrix, latency.

- top-1 accuracy: the router's first role is one of the example's roles.
- exact-set accuracy: the router's roles, as a set, are exactly the example's.
- per role: precision and recall over role sets (a two-role example counts for both roles).
- confusion matrix: rows the true role, columns the router's first role. The row is the first role the router
  got right when it got one, else the example's primary role, so the diagonal is the top-1 accuracy.
- latency: wall time of each call, one request at a time (after a few warm-up calls), p50 and p95.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine.config.schema import ROLES
from nexus_engine.router.dataset import Example

NONE = "(none)"


def run(examples: Sequence[Example], predict: Callable[[Example], list[str]], warmup: int = 3,
        reset: Callable[[], None] | None = None) -> dict[str, Any]:
    """Call `predict` on every example, timing each call, and score the answers. `reset` runs after the
    warm-up (to empty caches, so every timed request is a cold one)."""
    for e in examples[:warmup]:
        predict(e)
    if reset:
        reset()
    preds, ms = [], []
    for e in examples:
        t0 = time.perf_counter()
        preds.append(list(predict(e)))
        ms.append((time.perf_counter() - t0) * 1000)
    return score(examples, preds, ms)


def score(examples: Sequence[Example], preds: Sequence[list[str]], ms: Sequence[float] | None = None) -> dict[str, Any]:
    n = len(examples)
    labels = [*ROLES, NONE]
    conf = np.zeros((len(labels), len(labels)), int)
    tp, fp, fn = (dict.fromkeys(ROLES, 0) for _ in range(3))
    top1 = exact = 0
    errors = []
    for e, pred in zip(examples, preds):
        gold = set(e.towers)
        first = pred[0] if pred else NONE
        top1 += first in gold
        exact += set(pred) == gold
        row = first if first in gold else e.towers[0]
        conf[labels.index(row), labels.index(first)] += 1
        for r in ROLES:
            tp[r] += r in gold and r in pred
            fp[r] += r not in gold and r in pred
            fn[r] += r in gold and r not in pred
        if set(pred) != gold and len(errors) < 400:
            errors.append({"prompt": e.prompt[:120], "attachments": list(e.attachments), "gold": list(e.towers),
                           "pred": list(pred)})
    per_role = {r: {"precision": round(tp[r] / (tp[r] + fp[r]), 4) if tp[r] + fp[r] else 0.0,
                    "recall": round(tp[r] / (tp[r] + fn[r]), 4) if tp[r] + fn[r] else 0.0,
                    "support": tp[r] + fn[r]} for r in ROLES}
    ms_arr = np.asarray(ms if ms is not None else [0.0] * n, float)
    return {"n": n, "top1_accuracy": round(top1 / n, 4), "exact_set_accuracy": round(exact / n, 4),
            "mean_towers": round(sum(len(p) for p in preds) / n, 4),
            "p50_ms": round(float(np.percentile(ms_arr, 50)), 3), "p95_ms": round(float(np.percentile(ms_arr, 95)), 3),
            "per_role": per_role, "confusion": {"labels": labels, "matrix": conf.tolist()}, "errors": errors}


# ------------------------------------------------------------------------------------------ text
def render(name: str, rep: dict[str, Any], details: bool = True) -> str:
    out = [f"{name}: n={rep['n']}  top-1 {rep['top1_accuracy']:.1%}  exact-set {rep['exact_set_accuracy']:.1%}  "
           f"towers/request {rep['mean_towers']:.2f}  latency p50 {rep['p50_ms']:.1f} ms  p95 {rep['p95_ms']:.1f} ms"]
    if not details:
        return out[0]
    out += ["", f"  {'role':13} {'precision':>9} {'recall':>7} {'support':>8}"]
    for r, m in rep["per_role"].items():
        out.append(f"  {r:13} {m['precision']:9.1%} {m['recall']:7.1%} {m['support']:8d}")
    labels, mat = rep["confusion"]["labels"], rep["confusion"]["matrix"]
    short = [lab[:6] for lab in labels]
    out += ["", "  confusion (rows: true role, columns: router's first role)",
            "  " + " " * 13 + "".join(f"{s:>7}" for s in short)]
    for lab, row in zip(labels, mat):
        if any(row) or lab != NONE:
            out.append(f"  {lab:13}" + "".join(f"{v:7d}" if v else f"{'.':>7}" for v in row))
    if rep["errors"]:
        out += ["", f"  first misses ({len(rep['errors'])} shown):"]
        for err in rep["errors"][:15]:
            att = f" +{','.join(err['attachments'])}" if err["attachments"] else ""
            out.append(f"    {err['gold']} -> {err['pred']}: {err['prompt'][:80]!r}{att}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ plot
def confusion_png(rep: dict[str, Any], path: Path, title: str = "router confusion") -> Path:
    """A heatmap of the confusion matrix (row-normalised colour, counts written in), drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    labels, mat = rep["confusion"]["labels"], np.asarray(rep["confusion"]["matrix"], float)
    keep = [i for i, lab in enumerate(labels) if lab != NONE or mat[i].any() or mat[:, i].any()]
    labels, mat = [labels[i] for i in keep], mat[np.ix_(keep, keep)]
    cell, left, top = 44, 110, 120
    size = (left + cell * len(labels) + 20, top + cell * len(labels) + 40)
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((10, 8), f"{title}  (n={rep['n']}, top-1 {rep['top1_accuracy']:.1%}, exact {rep['exact_set_accuracy']:.1%})",
           fill="black", font=font)
    d.text((left, top - 18), "router's first role ->", fill="black", font=font)
    d.text((10, top - 18), "true role", fill="black", font=font)
    rows = mat.sum(1, keepdims=True)
    share = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    for j, lab in enumerate(labels):  # column labels, written vertically
        col = Image.new("RGBA", (100, 12), (255, 255, 255, 0))
        ImageDraw.Draw(col).text((0, 0), lab, fill="black", font=font)
        col = col.rotate(90, expand=True)
        img.paste(col, (left + j * cell + cell // 2 - 6, top - 22 - 100 + 2), col)
    for i, lab in enumerate(labels):
        d.text((10, top + i * cell + cell // 2 - 6), lab, fill="black", font=font)
        for j in range(len(labels)):
            s = share[i, j]
            color = (int(255 - 225 * s), int(255 - 140 * s), 255) if i == j else (255, int(255 - 200 * s),
                                                                                   int(255 - 200 * s))
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 2, y0 + cell - 2], fill=color, outline=(220, 220, 220))
            if mat[i, j]:
                d.text((x0 + 8, y0 + cell // 2 - 6), str(int(mat[i, j])), fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
