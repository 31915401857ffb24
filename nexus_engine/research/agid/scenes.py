"""Rendered synthetic scenes with exact captions: coloured shapes, one or two kinds, one to three of each.

Every scene is a pure function of its seed, so a data set is (seed range, held-out combinations) and its hash
is reproducible. Objects stay inside the centre crop the vision tower looks at (224 of 256 px) and never
overlap, so the caption ("two red circles and a blue square") is exactly true of the pixels.
A few colour-shape combinations are never rendered for training (`NOVEL`): held-out scenes that use them
measure whether the projector composes attributes or only memorised pairs.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 256
MARGIN = 28  # the tower centre-crops 224 of 256 px: keep every object inside with room to spare
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (240, 210, 30),
    "purple": (140, 50, 170), "orange": (245, 140, 20), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle", "star")
NUMBERS = {1: "a", 2: "two", 3: "three"}  # "a" even before a vowel ("a orange star"): exact and regular, not pretty
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
NOVEL = frozenset({("red", "star"), ("blue", "triangle"), ("green", "square"), ("yellow", "circle"),
                   ("purple", "star"), ("orange", "square"), ("black", "triangle")})
QUESTIONS = ("What is in the image?", "What do you see?", "Describe the image.", "What shapes are in the picture?",
             "What is shown here?")


@dataclass(frozen=True)
class Kind:
    color: str
    shape: str
    count: int

    def phrase(self) -> str:
        return f"{NUMBERS[self.count]} {self.color} {self.shape}{'s' if self.count > 1 else ''}"


@dataclass
class Scene:
    seed: int
    kinds: list[Kind]
    image: Image.Image

    @property
    def caption(self) -> str:
        return f"The image shows {describe(self.kinds)}."

    @property
    def novel(self) -> bool:
        return any((k.color, k.shape) in NOVEL for k in self.kinds)


def describe(kinds: list[Kind]) -> str:
    """"two red circles and a blue square": the exact phrase for one or two kinds (captions, spoken utterances)."""
    parts = [k.phrase() for k in kinds]
    return parts[0] if len(parts) == 1 else f"{parts[0]} and {parts[1]}"


def sample_kinds(rng: random.Random, novel: bool | None = False) -> list[Kind]:
    """One or two kinds of objects, in a canonical order. novel=False: no NOVEL pair; True: at least one NOVEL pair;
    None: anything. (The audio utterances draw their content here too, so both modalities share one vocabulary.)"""
    while True:
        n_kinds = rng.choice((1, 2))
        pairs: list[tuple[str, str]] = []
        while len(pairs) < n_kinds:
            p = (rng.choice(list(COLORS)), rng.choice(SHAPES))
            if p not in pairs and (novel is not False or p not in NOVEL):
                pairs.append(p)
        if novel is not True or any(p in NOVEL for p in pairs):
            break
    return [Kind(c, s, rng.choice((1, 2, 3))) for c, s in sorted(pairs, key=lambda p: (SHAPES.index(p[1]), p[0]))]


def render(seed: int, novel: bool | None = False) -> Scene:
    """Scene `seed`. novel=False: no NOVEL pair; True: at least one NOVEL pair; None: anything."""
    rng = random.Random(seed)
    kinds = sample_kinds(rng, novel)
    bg = tuple(rng.randint(200, 245) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), bg)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float]] = []
    for k in kinds:
        for _ in range(k.count):
            for _try in range(200):
                r = rng.uniform(16, 26)
                x, y = rng.uniform(MARGIN + r, SIZE - MARGIN - r), rng.uniform(MARGIN + r, SIZE - MARGIN - r)
                if all(math.hypot(x - a, y - b) > r + s + 6 for a, b, s in placed):
                    break
            placed.append((x, y, r))
            _draw(draw, k.shape, x, y, r, COLORS[k.color])
    return Scene(seed, kinds, image)


def _draw(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, color: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((x - s, y - s, x + s, y + s), fill=color)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x - r * 0.95, y + r * 0.75), (x + r * 0.95, y + r * 0.75)], fill=color)
    else:  # five-pointed star
        pts = [(x + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                y - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
        draw.polygon(pts, fill=color)


def dataset_hash(scenes: list[Scene]) -> str:
    """sha256 of every scene's pixels and caption."""
    h = hashlib.sha256()
    for s in scenes:
        h.update(s.caption.encode())
        h.update(s.image.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- scoring
def _plural(shape: str) -> str:
    return rf"{shape}s?"


def named(answer: str, kind: Kind) -> bool:
    """The answer names this colour and shape together ("red circle", "red circles")."""
    return re.search(rf"\b{kind.color}\s+{_plural(kind.shape)}\b", answer.lower()) is not None


def counted(answer: str, kind: Kind) -> bool:
    """... with the right number right before it ("two red circles"; "a"/"one" for one)."""
    m = re.search(rf"\b(\w+)\s+{kind.color}\s+{_plural(kind.shape)}\b", answer.lower())
    return m is not None and NUMBER_WORDS.get(m.group(1)) == kind.count


def score(answer: str, kinds: list[Kind]) -> dict[str, float]:
    """Per scene: object recall (colour+shape named), colours and shapes mentioned at all, counts, invented
    objects (a colour+shape pair named that is not there) and exact (all named, counted, nothing invented)."""
    a = answer.lower()
    said = {(c, s) for c in COLORS for s in SHAPES if re.search(rf"\b{c}\s+{_plural(s)}\b", a)}
    real = {(k.color, k.shape) for k in kinds}
    n = len(kinds)
    got = {"objects": sum(named(a, k) for k in kinds) / n,
           "colors": sum(re.search(rf"\b{k.color}\b", a) is not None for k in kinds) / n,
           "shapes": sum(re.search(rf"\b{_plural(k.shape)}\b", a) is not None for k in kinds) / n,
           "counts": sum(counted(a, k) for k in kinds) / n,
           "invented": float(len(said - real))}
    got["exact"] = float(got["objects"] == 1 and got["counts"] == 1 and not (said - real))
    return got
