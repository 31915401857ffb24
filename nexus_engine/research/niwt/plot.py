"""PNG charts drawn with Pillow (no matplotlib in the engine's dependencies): line charts and a heatmap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

W, H = 880, 440
PAD_L, PAD_R, PAD_T, PAD_B = 72, 180, 40, 52
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def line_chart(path: Path, series: dict[str, Sequence[tuple[float, float]]], title: str, xlabel: str,
               ylabel: str, hlines: Sequence[tuple[float, str]] = (), ylim: tuple[float, float] | None = None) -> Path:
    """One polyline (with dots) per series; optional dashed horizontal reference lines."""
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    series = {k: [(x, y) for x, y in s if y is not None and math.isfinite(y)] for k, s in series.items()}
    pts = [p for s in series.values() for p in s]
    xs = [p[0] for p in pts] or [0, 1]
    ys = [p[1] for p in pts] + [v for v, _ in hlines] or [0, 1]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = ylim or (min(ys), max(ys))
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def xy(x: float, y: float) -> tuple[float, float]:
        y = min(max(y, y0), y1)
        return PAD_L + (x - x0) / (x1 - x0) * pw, PAD_T + (1 - (y - y0) / (y1 - y0)) * ph

    f, small = _font(15), _font(12)
    d.text((PAD_L, 10), title, fill="black", font=f)
    d.rectangle([PAD_L, PAD_T, PAD_L + pw, PAD_T + ph], outline="#888")
    for t in _ticks(y0, y1):
        _, y = xy(x0, t)
        d.line([PAD_L, y, PAD_L + pw, y], fill="#eee")
        d.text((PAD_L - 8, y), f"{t:g}", fill="black", font=small, anchor="rm")
    for t in _ticks(x0, x1, 10):
        x, _ = xy(t, y0)
        d.text((x, PAD_T + ph + 6), f"{t:g}", fill="black", font=small, anchor="mt")
    d.text((PAD_L + pw / 2, H - 18), xlabel, fill="black", font=small, anchor="mm")
    d.text((8, PAD_T - 20), ylabel, fill="black", font=small)
    for v, label in hlines:
        _, y = xy(x0, v)
        for x in range(PAD_L, PAD_L + pw, 12):
            d.line([x, y, min(x + 6, PAD_L + pw), y], fill="#555")
        d.text((PAD_L + pw - 4, y - 3), label, fill="#555", font=small, anchor="rb")  # inside: the legend is outside
    for k, (name, s) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        p = [xy(x, y) for x, y in s]
        if len(p) > 1:
            d.line(p, fill=color, width=2)
        for x, y in p:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        d.text((PAD_L + pw + 12, PAD_T + 30 + 18 * k), name, fill=color, font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path


def heatmap(path: Path, rows: Sequence[str], values: Sequence[Sequence[float]], title: str,
            xlabel: str = "layer", log: bool = True) -> Path:
    """rows x columns of non-negative values (white = 0, dark red = max; log scale by default)."""
    n_cols = max(len(r) for r in values)
    cell_w = max(10, min(28, (W - 150) // max(n_cols, 1)))
    cell_h = 26
    img = Image.new("RGB", (150 + cell_w * n_cols + 20, 70 + cell_h * len(rows) + 30), "white")
    d = ImageDraw.Draw(img)
    f, small = _font(15), _font(11)
    flat = [v for r in values for v in r if math.isfinite(v)]
    top = max(flat) if flat else 1.0

    def shade(v: float) -> tuple[int, int, int]:
        if not math.isfinite(v) or top <= 0:
            return (230, 230, 230)
        t = math.log1p(max(v, 0) / top * 999) / math.log(1000) if log else max(v, 0) / top
        return (255 - int(75 * t), int(255 * (1 - t)), int(255 * (1 - t)))

    d.text((10, 10), title, fill="black", font=f)
    for i, (name, row) in enumerate(zip(rows, values)):
        y = 50 + i * cell_h
        d.text((140, y + cell_h / 2), name, fill="black", font=small, anchor="rm")
        for j, v in enumerate(row):
            x = 150 + j * cell_w
            d.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=shade(v))
    for j in range(0, n_cols, max(1, n_cols // 15)):
        d.text((150 + j * cell_w + cell_w / 2, 54 + len(rows) * cell_h), str(j), fill="black", font=small,
               anchor="mt")
    d.text((150, 72 + len(rows) * cell_h), f"{xlabel} (white = no change, dark = {top:.3g}; log colour scale)",
           fill="black", font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path
