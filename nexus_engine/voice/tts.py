"""Speaking the reply while it is written: the LLM's tokens are cut into speakable pieces, each piece is
synthesized as soon as it is complete, and its audio is queued for playback while the next is synthesized.

`Chunker` decides the pieces. The first piece ends at the first clause boundary (a comma, a colon, a sentence
end) once it has `first_words` words, because the time to the first audio is what makes a voice feel
responsive; later pieces are whole sentences (better prosody), or clauses once a sentence runs long. Markdown
and code that a voice should not read aloud (`*`, `#`, backticks, URLs, emoji) are cleaned out.

`Speaker` wraps any TTS tower with `speak(text) -> (waveform, sample_rate)` (Piper here, Qwen3-TTS on the seed
profile) and returns 16 kHz audio for the audio backend.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from nexus_engine.voice.audio_io import RATE, resample

SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(\s|$)")
CLAUSE_END = re.compile(r"[,;:—–]\s|\s-\s")
CODE = re.compile(r"```.*?```|`[^`]*`", re.DOTALL)  # not read aloud
LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")  # the link's text is read, not its address
URL = re.compile(r"https?://\S+")
MARKUP = re.compile(r"\*\*|__|[*#>|~]")
EMOJI = re.compile("[\U0001F300-\U0001FAFF\U00002700-\U000027BF\U0001F000-\U0001F2FF]")


def clean(text: str) -> str:
    """Text fit to be read aloud."""
    text = CODE.sub(" ", text)
    text = LINK.sub(lambda m: m.group(1), text)
    text = MARKUP.sub("", URL.sub(" ", text))
    text = EMOJI.sub(" ", text)
    return " ".join(text.split())


class Chunker:
    def __init__(self, first_words: int = 2, max_words: int = 30) -> None:
        self.first_words = first_words
        self.max_words = max_words
        self.buf = ""
        self.count = 0  # pieces emitted

    def feed(self, text: str) -> list[str]:
        """Add generated text; return the pieces that are now complete."""
        self.buf += text
        out = []
        while True:
            piece = self._next()
            if piece is None:
                return out
            out.append(piece)

    def flush(self) -> list[str]:
        """The rest, at the end of the reply."""
        rest, self.buf = clean(self.buf), ""
        return [rest] if rest and re.search(r"\w", rest) else []

    def _next(self) -> str | None:
        m = SENTENCE_END.search(self.buf)
        cut = m.end() if m else None
        n_words = len(self.buf[:cut].split()) if cut else len(self.buf.split())
        first = self.count == 0
        long_first = first and n_words > self.first_words * 4
        # no sentence end yet (or a long one): a clause boundary will do for the first piece, or in a long sentence
        if (cut is None or long_first) and (first or n_words >= self.max_words):
            need = self.first_words if first else self.max_words // 2
            for c in CLAUSE_END.finditer(self.buf, 0, cut or len(self.buf)):
                if len(self.buf[:c.end()].split()) >= need:
                    cut = c.end()
                    break
        if cut is None:
            return None
        piece, self.buf = clean(self.buf[:cut]), self.buf[cut:]
        if not re.search(r"\w", piece):
            return None if not self.buf else self._next()
        self.count += 1
        return piece


class Speaker:
    """A TTS tower as the loop's speech stage: text -> 16 kHz float32 audio."""

    def __init__(self, tower: Any, voice: str | None = None) -> None:
        self.tower = tower
        self.voice = voice

    def __call__(self, text: str) -> np.ndarray:
        kwargs = {"voice": self.voice} if self.voice else {}
        wav, sr = self.tower.speak(text, **kwargs)
        audio = resample(np.asarray(wav, dtype=np.float32).reshape(-1), int(sr), RATE)
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 0.99:  # a clipped voice sounds broken; scale rather than clip
            audio *= 0.99 / peak
        return audio
