"""Starter-path image description: EfficientNet-Lite0 labels and RapidOCR text -> a compact, faithful note.

What the note may say is bounded by what the two models can know. The classifier picks among 1000 ImageNet
classes for the image as a whole (no people, no counts, no positions); OCR reads printed text. So the note:
- names a thing confidently only when its everyday word (labels.py) reaches SURE, says "possibly" down to
  MAYBE, and otherwise says it cannot tell — never a guess dressed as a fact;
- quotes OCR text verbatim (lines under OCR_MIN_SCORE are dropped, not "corrected");
- always ends with what the models cannot see, so the chat model has no gap to fill with invention.

The thresholds were set on the 24 COCO validation images in tests/engine/test_vision.py (the test reports the
precision of each band): summed word probability >= 0.40 was right 13 times in 15, 0.10-0.40 half the time.
A word must also reach LIFT times its chance share, or a flat, clueless output would read "possibly a dog".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nexus_engine.vision import labels

SURE = 0.40
MAYBE = 0.10
LIFT = 2.0  # and at least this many times the word's chance share (labels.prior): 'dog' needs 24 %
MAX_WORDS = 3  # everyday words mentioned at most
OCR_MIN_SCORE = 0.6
MAX_TEXT_CHARS = 400  # OCR text quoted in the note (a screenshot of a page would drown the question)
LIMITS = ("automatic labels from a small ImageNet classifier plus a text reader: they do not detect people, "
          "count things, or say where anything is")


@dataclass
class Seen:
    """One everyday word the classifier supports, with its summed probability and the classes behind it."""

    word: str
    score: float
    classes: list[tuple[str, float]]

    @property
    def sure(self) -> bool:
        return self.score >= SURE

    def phrase(self) -> str:
        fine = [n for n, _ in self.classes if n.lower() != self.word.lower()][:2]
        detail = f"{self.score:.0%}" + (f": {', '.join(fine)}" if fine else "")
        return f"{_article(self.word)} ({detail})"


@dataclass
class ImageDescription:
    """What the starter models found in one image (or one video frame)."""

    seen: list[Seen]
    text: list[str]
    width: int = 0
    height: int = 0
    notes: list[str] = field(default_factory=list)
    ms: dict[str, float] = field(default_factory=dict)
    features: Any = None  # [1280] unit vector (EfficientNet pooled features), for the index; not serialised

    @property
    def sure(self) -> list[Seen]:
        return [s for s in self.seen if s.sure]

    @property
    def maybe(self) -> list[Seen]:
        return [s for s in self.seen if not s.sure]

    def sentence(self) -> str:
        """The faithful summary: what it shows, what it possibly shows, its text, its limits."""
        parts = []
        if self.sure:
            parts.append("shows " + _join([s.phrase() for s in self.sure]))
        if self.maybe:
            parts.append("possibly " + _join([s.phrase() for s in self.maybe], "or"))
        if not self.seen:
            parts.append("the classifier cannot tell what it shows")
        parts.append(text_phrase(self.text))
        return "; ".join([*parts, *self.notes])

    def words(self) -> list[str]:
        """Every word the description mentions (everyday words and class names), for matching and the index."""
        out = []
        for s in self.seen:
            out.append(s.word)
            out.extend(n for n, _ in s.classes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence(), "width": self.width, "height": self.height, "text": self.text,
                "seen": [{"word": s.word, "score": round(s.score, 4), "sure": s.sure,
                          "classes": [[n, round(p, 4)] for n, p in s.classes]} for s in self.seen],
                "notes": self.notes, "ms": {k: round(v, 1) for k, v in self.ms.items()}}


def seen_from(probs: np.ndarray) -> list[Seen]:
    """[1000] probabilities (one image, or the mean over frames) -> the words worth mentioning."""
    return [Seen(w, s, c) for w, s, c in labels.group(probs)[:MAX_WORDS] if s >= max(MAYBE, LIFT * labels.prior(w))]


def describe_image(image: Any, classifier: Any, ocr: Any | None, *, width: int = 0, height: int = 0,
                   notes: list[str] | None = None, extra_frames: list[Any] | None = None) -> ImageDescription:
    """Run the classifier (and OCR, when given) on a PIL RGB image. `extra_frames`: later frames of an
    animation; their probabilities are averaged with the first frame's."""
    t0 = time.perf_counter()
    probs, feats = classifier.classify([image, *(extra_frames or [])])
    t1 = time.perf_counter()
    lines = [ln.text for ln in ocr.read(image, OCR_MIN_SCORE)] if ocr is not None else []
    t2 = time.perf_counter()
    ms = {"classify": (t1 - t0) * 1000}
    if ocr is not None:
        ms["ocr"] = (t2 - t1) * 1000
    return ImageDescription(seen_from(probs.mean(axis=0)), lines, width or image.width, height or image.height,
                            list(notes or []), ms, feats.mean(axis=0))


def text_phrase(lines: list[str]) -> str:
    if not lines:
        return "no readable text"
    quoted = " / ".join(lines)
    if len(quoted) > MAX_TEXT_CHARS:
        quoted = quoted[:MAX_TEXT_CHARS].rsplit(" ", 1)[0] + " …"
    return f'text in it: "{quoted}"'


def _article(word: str) -> str:
    if (word.endswith("s") and not word.endswith("ss")) or word in ("broccoli", "food", "text"):
        return word
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _join(items: list[str], conj: str = "and") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {conj} " + items[-1]
