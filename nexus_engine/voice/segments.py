"""Whether a live turn can be cut at a short pause, so the final at the end of a long turn only transcribes its
last seconds.

A pause of 64 ms inside a sentence may be a stop consonant's closure ("mut-ton") rather than a gap between words.
The pause's final transcription says which: it comes back with word times and probabilities (Whisper's
cross-attention alignment), and a word cut through ends in a hyphen ("fat mut-") or is a guess with a low
probability. Only a pause after a confidently heard whole word becomes a cut.
"""

from __future__ import annotations

import re
from typing import Any

MIN_KEEP_WORDS = 3  # fewer is not worth a cut (and is more often a misheard fragment)
MIN_LAST_WORD_P = 0.6  # below this the last word was probably heard only in part


def merged(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whisper's words with punctuation joined to the word before it (",", "." come as words of their own)."""
    out: list[dict[str, Any]] = []
    for w in words:
        text = str(w.get("word", "")).strip()
        if not text:
            continue
        if out and not re.search(r"[A-Za-z0-9]", text):
            out[-1] = {**out[-1], "word": out[-1]["word"] + text}
        else:
            out.append({**w, "word": text})
    return out


def ends_between_words(words: list[dict[str, Any]]) -> bool:
    """Did the audio these word times come from end between two words (not inside one)?"""
    ws = merged(words)
    if len(ws) < MIN_KEEP_WORDS:
        return False
    last = ws[-1]
    return not re.search(r"[-‐–—]$", last["word"]) and float(last.get("probability", 0.0)) >= MIN_LAST_WORD_P


def after_preroll(words: list[dict[str, Any]], preroll_s: float, before: str = "") -> list[dict[str, Any]]:
    """The words of a piece transcribed with `preroll_s` of the audio before its cut as context: those in the
    preroll were kept with the previous piece (`before`, its text); times are shifted to the cut.

    Which words those are is decided by time (the middle of each word's aligned span), corrected by one word
    either way where the text says so: a short word right after the cut ("pieces | to be") is often aligned a
    little early, and dropping it would lose it."""
    ws = merged(words)
    k = sum(1 for w in ws if (float(w["start"]) + float(w["end"])) / 2 < preroll_s)
    tail = _norm(before.split())
    for cand in (k, k - 1, k + 1):
        if 0 < cand <= min(len(ws), len(tail)) and _norm(w["word"] for w in ws[:cand]) == tail[-cand:]:
            k = cand
            break
    return [{**w, "start": round(max(0.0, float(w["start"]) - preroll_s), 3),
             "end": round(max(0.0, float(w["end"]) - preroll_s), 3)} for w in ws[k:]]


def _norm(words: Any) -> list[str]:
    return [re.sub(r"[^a-z0-9']", "", str(w).lower()) for w in words]
