"""One turn's transcript as it is heard: the pieces already finished, the final running for the current pause, and
where the turn is cut so that the final at its end only transcribes the last seconds.

At each pause (64 ms of silence) a final of the segment since the last cut starts: if the pause is the end of the
turn, that is its transcript. When the user goes on, the pause may become a cut: at once after a ≥200 ms gap, or
after a shorter one once its final says it fell between two whole words (segments.py). A piece after a cut is
transcribed with 1 s of the audio before it as context, and the words of that preroll are removed again.
Finals are tagged 1, 2, …; partials -turn (a shared number would let a partial's completion cancel the drop of a
final with that tag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from nexus_engine.towers.asr_whisper import cut_loop
from nexus_engine.voice.asr import AsrResult
from nexus_engine.voice.segments import after_preroll, ends_between_words
from nexus_engine.voice.vad import WINDOW_MS

MIN_SEGMENT_MS = 1500.0  # speech before a pause that is kept as a finished segment when the user goes on
# ... if the pause was this long: shorter gaps are the closure of a stop consonant inside a word ("mut-ton") or a
# soft onset the VAD misses ("you | his"), and cutting there loses or splits a word
SEGMENT_GAP_MS = 200.0
# a shorter pause after this much speech still cuts the turn if the pause's final says it fell between two words
EAGER_SEGMENT_MS = 2000.0
# a piece after a cut is transcribed with this much audio from before the cut: alone, a short tail ("counselled
# him") is misheard; the words in the preroll are dropped again by their aligned times
PREROLL_MS = 1000.0


class TurnText:
    def __init__(self, asr: Any, audio: Callable[[float, float], np.ndarray], new_tag: Callable[[], int]) -> None:
        self.asr, self.audio, self.new_tag = asr, audio, new_tag
        self.first_ms: float | None = None  # the turn's first sample (None: no start event yet)
        self.seg_start = 0.0  # audio ms where the segment being spoken started
        self.parts: list[AsrResult | None] = []  # finished segments of this turn, in order (None: transcribing)
        self.part_of: dict[int, int] = {}  # final tag -> its index in parts
        self.pause_tag = -1  # the final running for the current pause (-1: none)
        self.pause_cut = 0.0
        self.pause_from = 0.0  # where that final's audio starts
        self.pause_speech_ms = 0.0
        self.pause_at = 0.0  # audio ms of the last speech before the current pause
        self.pause_result: AsrResult | None = None
        self.trims: dict[int, tuple[int, float, float]] = {}  # final tag -> (part, audio from, to): cut by words
        self.preroll: dict[int, float] = {}  # final tag -> seconds of audio before its cut it was given
        self.partial_from = -1.0  # where the partial in flight starts

    # ------------------------------------------------------------------------------------------ events
    def begin(self, start_ms: float) -> None:
        self.first_ms = self.seg_start = start_ms

    def pause(self, at_ms: float, now_ms: float, speech_ms: float) -> None:
        self.pause_at, self.pause_cut = at_ms, now_ms
        self._pause_final(speech_ms)

    def resume(self, at_ms: float) -> None:
        gap = at_ms - WINDOW_MS - self.pause_at
        spoken = self.pause_cut - self.seg_start
        if self.pause_tag >= 0 and gap >= SEGMENT_GAP_MS and spoken >= MIN_SEGMENT_MS:
            # keep what was said before the pause as a finished segment: the final at the end of the turn then
            # only has the audio since, so its cost does not grow with the length of the turn
            self.parts.append(self.pause_result)
            if self.pause_result is None:
                self.part_of[self.pause_tag] = len(self.parts) - 1
            self.seg_start = self.pause_cut
        elif self.pause_tag >= 0 and self.asr.aligns and not self.trims and spoken >= EAGER_SEGMENT_MS:
            # a short pause: cut here if its final (once back) heard whole words up to it
            self.parts.append(None)
            self.trims[self.pause_tag] = (len(self.parts) - 1, self.pause_from, self.pause_cut)
            if self.pause_result is not None:
                self._trim(self.pause_tag, self.pause_result)
        elif self.pause_tag >= 0 and self.pause_result is None:
            self.asr.drop(self.pause_tag)  # not started yet: skip it
        self.pause_tag, self.pause_result = -1, None

    def segment(self, now_ms: float, speech_ms: float) -> None:
        """A monologue without pauses: cut it here."""
        self.parts.append(None)
        self.part_of[self._submit_final(self.seg_start, now_ms, speech_ms)] = len(self.parts) - 1
        self.seg_start = now_ms

    def end(self, now_ms: float, speech_ms: float) -> None:
        if self.pause_tag < 0:  # push-to-talk released mid-speech: no pause final yet
            self.pause_cut = now_ms
            self._pause_final(speech_ms)

    def partial(self, turn_id: int, now_ms: float, speech_ms: float) -> None:
        if self.asr.submit(-turn_id, self.audio(self.seg_start, now_ms), False, speech_ms):
            self.partial_from = self.seg_start

    def partial_is_current(self) -> bool:
        """The partial in flight started where the segment does (not before a cut made meanwhile)."""
        return self.partial_from == self.seg_start

    # --------------------------------------------------------------------------------------- results
    def final(self, tag: int, res: AsrResult) -> tuple[str, AsrResult]:
        """File a final: ("part", res) a finished piece, ("pause", res) the current pause's final (now
        `pause_result`), ("stale", res) an abandoned pause's."""
        if tag in self.preroll:  # heard with the audio before its cut: keep only the words after it
            ws = after_preroll(res.words, self.preroll.pop(tag), self.text())
            res = replace(res, text=" ".join(w["word"] for w in ws), words=ws,
                          phantom=res.phantom or ("" if ws else "nothing after the cut"))
        if tag in self.trims:  # a short pause's final: a cut if it heard whole words
            self.part_of.pop(tag, None)
            self._trim(tag, res)
            return "part", res
        if tag in self.part_of:
            self.parts[self.part_of.pop(tag)] = res
            return "part", res
        if tag != self.pause_tag:
            return "stale", res
        self.pause_result = res
        return "pause", res

    def text(self, last: AsrResult | None = None) -> str:
        """The turn's transcript from its finished segments (and `last`)."""
        # pieces are transcribed apart, so a tail that starts the utterance over ("…counseled him. Stuffing It
        # Into You") is only seen whole here
        return cut_loop(" ".join(p.text for p in [*self.parts, last] if p is not None and not p.phantom).strip())

    @property
    def transcribing(self) -> bool:
        """A finished piece's final is not back yet."""
        return None in self.parts

    def ready(self) -> bool:
        return self.pause_result is not None and not self.transcribing

    # ---------------------------------------------------------------------------------------- inside
    def _pause_final(self, speech_ms: float) -> None:
        """Transcribe the segment up to the pause (the turn's final, if the pause turns out to be its end)."""
        self.pause_from, self.pause_speech_ms, self.pause_result = self.seg_start, speech_ms, None
        self.pause_tag = self._submit_final(self.seg_start, self.pause_cut, speech_ms)

    def _trim(self, tag: int, res: AsrResult) -> None:
        """A short pause's final is back: when its words say the pause fell between two words, it is a finished
        part and the turn goes on from the pause; otherwise the part stays empty and nothing moves."""
        idx, start, end = self.trims.pop(tag)
        later = any(t > tag for t in self.part_of)
        if res.phantom or later or self.seg_start != start or not ends_between_words(res.words):
            self.parts[idx] = replace(res, text="", words=[], phantom="not cut here")
            return
        self.parts[idx] = replace(res, words=[])
        self.seg_start = end
        if self.pause_tag not in (-1, tag) and self.pause_from == start:  # a later pause's final heard it too
            self.asr.drop(self.pause_tag)
            self._pause_final(self.pause_speech_ms)

    def _submit_final(self, start_ms: float, end_ms: float, speech_ms: float) -> int:
        tag = self.new_tag()
        pre = min(PREROLL_MS, max(0.0, start_ms - self.first_ms)) if self.asr.aligns and self.first_ms is not None \
            else 0.0
        if pre > 0:
            self.preroll[tag] = pre / 1000
        # no prompt: given the turn's earlier text and a short tail of audio, Whisper repeats the prompt
        self.asr.submit(tag, self.audio(start_ms - pre, end_ms), True, speech_ms)
        return tag
