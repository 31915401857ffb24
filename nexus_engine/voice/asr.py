"""Speech recognition stages: streaming (partials while the user speaks, a final at the pause) and long-form
(a file of any length, in chunks, with progress, timestamps and cancel).

Any ASR tower plugs in if it has `transcribe(audio, sample_rate) -> object with .text (and optionally
.segments, .no_speech_prob, .avg_logprob)`: the starter Whisper (towers/asr_whisper.py) and the seed Parakeet
and VibeVoice towers (towers/asr_hf.py) all do.

Phantom turns: Whisper writes text for silence and noise ("Thank you.", "I'm not sure if I can do it." were
measured on 2 s of digital silence and of white noise). A final is dropped when Whisper itself doubts it (high
no-speech probability with a low mean log-probability), when it is a known hallucination said over little
voiced audio, or when it is empty. The VAD gate before it already keeps most silence away.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine.voice.audio_files import decode_chunks, probe_duration
from nexus_engine.voice.audio_io import RATE, level_db
from nexus_engine.voice.turns import words

log = logging.getLogger("nexus.voice.asr")

HALLUCINATIONS = frozenset({
    "thank you", "thank you very much", "thanks for watching", "thank you for watching", "thanks", "you", "bye",
    "bye bye", "goodbye", "please subscribe", "subscribe", "subtitles by the amara org community", "music",
    "applause", "i'm not sure if i can do it", "so", "okay", "oh", "the end",
})


@dataclass
class AsrResult:
    text: str
    final: bool
    ms: float  # compute time
    audio_s: float
    phantom: str = ""  # why the result was judged not to be speech ("" = real)
    segments: list[dict[str, Any]] = field(default_factory=list)
    words: list[dict[str, Any]] = field(default_factory=list)  # finals, where the tower aligns words: word/start/end


def phantom_reason(result: Any, audio: np.ndarray, speech_ms: float) -> str:
    """Why `result` is probably not what the user said ('' when it looks real)."""
    text = str(getattr(result, "text", "")).strip()
    if not words(text):
        return "empty"
    nsp = float(getattr(result, "no_speech_prob", 0.0))
    alp = float(getattr(result, "avg_logprob", 0.0))
    if alp < -1.0 and nsp > 0.4:
        return f"low confidence (no-speech {nsp:.2f}, log-prob {alp:.2f})"
    if alp < -1.5:
        return f"low confidence (log-prob {alp:.2f})"
    norm = " ".join(words(text))
    if norm in HALLUCINATIONS and (speech_ms < 600 or nsp > 0.3 or level_db(audio) < -45):
        return f"a known hallucination ({text!r}) over little speech"
    return ""


class StreamingASR:
    """Runs the ASR tower on its own thread. The loop submits the current utterance for a partial (latest one
    wins; skipped while the tower is busy) or a final (always run, tagged with a turn number so a stale final
    from an abandoned pause is ignored). Results come back through `on_result(tag, AsrResult)`."""

    def __init__(self, tower: Any, on_result: Callable[[int, AsrResult], None]) -> None:
        self.tower = tower
        self.on_result = on_result
        self.jobs: queue.Queue[tuple[int, np.ndarray, bool, float, str] | None] = queue.Queue()
        self.busy = False
        self.prompted = _accepts(tower.transcribe, "prompt")  # Whisper takes the earlier text as context
        self.aligns = _accepts(tower.transcribe, "words")  # word times: a live turn can be cut between words
        self.dropped: set[int] = set()  # tags whose results nobody wants any more (not started: skipped)
        self._thread = threading.Thread(target=self._run, name="nexus-asr", daemon=True)
        self._thread.start()

    def submit(self, tag: int, audio: np.ndarray, final: bool, speech_ms: float, prompt: str = "") -> bool:
        """Queue a transcription; False when a partial was skipped."""
        if not final and (self.busy or not self.jobs.empty()):
            return False  # a partial is only a preview: never queue one behind other work
        self.jobs.put((tag, audio.copy(), final, speech_ms, prompt))
        return True

    def drop(self, tag: int) -> None:
        self.dropped.add(tag)

    def close(self) -> None:
        self.jobs.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            tag, audio, final, speech_ms, prompt = job
            if tag in self.dropped:
                self.dropped.discard(tag)
                continue
            self.busy = True
            try:
                t0 = time.perf_counter()
                kwargs: dict[str, Any] = {"prompt": prompt[-200:]} if prompt and self.prompted else {}
                if final and self.aligns:
                    kwargs["words"] = True
                res = self.tower.transcribe(audio, RATE, **kwargs)
                ms = (time.perf_counter() - t0) * 1000
                why = phantom_reason(res, audio, speech_ms) if final else ""
                self.on_result(tag, AsrResult(str(res.text).strip(), final, ms, len(audio) / RATE, why,
                                              words=list(getattr(res, "words", None) or [])))
            except Exception as e:  # a failing transcription must not end the call
                log.exception("transcription failed")
                self.on_result(tag, AsrResult("", final, 0.0, len(audio) / RATE, f"error: {e}"))
            finally:
                self.busy = False
                self.dropped.discard(tag)


# ------------------------------------------------------------------------------------------ long form
def split_point(audio: np.ndarray, lo: int, hi: int, win: int = 1600) -> int:
    """The quietest 100 ms between samples lo and hi: chunks are cut between words, not through them."""
    if hi - lo <= win:
        return hi
    seg = audio[lo:hi]
    n = len(seg) // win
    energy = np.square(seg[:n * win].reshape(n, win)).mean(axis=1)
    return lo + int(np.argmin(energy)) * win + win // 2


def transcribe_long(tower: Any, path: str | Path, chunk_s: float = 28.0,
                    on_progress: Callable[[float, float, list[dict[str, Any]]], None] | None = None,
                    cancel: threading.Event | None = None) -> dict[str, Any]:
    """Transcribe a file of any length: decoded as it goes, cut near every `chunk_s` seconds at the quietest
    moment, each piece transcribed with the previous text as context, timestamps shifted to the file's time.

    on_progress(done_s, total_s, new_segments) after each chunk. `cancel` stops between chunks; the result then
    has finish "cancelled" and what was transcribed so far.
    """
    total = probe_duration(path)
    want = int(chunk_s * RATE)
    look = int(3.0 * RATE)  # search the last 3 s of a chunk for a quiet cut
    segments: list[dict[str, Any]] = []
    pending = np.zeros(0, dtype=np.float32)
    offset = 0  # samples of the file before `pending`
    t0 = time.perf_counter()

    def run(piece: np.ndarray) -> None:
        prompt = " ".join(s["text"] for s in segments[-3:])[-200:]
        new = _transcribe_piece(tower, piece, offset / RATE, prompt)
        segments.extend(new)
        if on_progress is not None:
            on_progress((offset + len(piece)) / RATE, max(total, (offset + len(piece)) / RATE), new)

    finish = "done"
    for block in decode_chunks(path, chunk_s):
        pending = np.concatenate([pending, block])
        while len(pending) >= want + look and finish == "done":
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            cut = split_point(pending, want - look, want)
            run(pending[:cut])
            offset += cut
            pending = pending[cut:]
        if finish != "done":
            break
    if finish == "done" and len(pending) > RATE // 10:
        run(pending)
        offset += len(pending)
    text = " ".join(s["text"] for s in segments).strip()
    return {"text": text, "segments": segments, "duration_s": round(offset / RATE, 2), "finish": finish,
            "compute_s": round(time.perf_counter() - t0, 2)}


def _transcribe_piece(tower: Any, piece: np.ndarray, start_s: float, prompt: str) -> list[dict[str, Any]]:
    if level_db(piece) < -60:  # digital silence: nothing to say, and Whisper would invent something
        return []
    kwargs: dict[str, Any] = {}
    if hasattr(tower, "sampling_rate") and _accepts(tower.transcribe, "timestamps"):
        kwargs = {"timestamps": True, "prompt": prompt or None}
    res = tower.transcribe(piece, RATE, **kwargs)
    segs = list(getattr(res, "segments", None) or [])
    dur = len(piece) / RATE
    if not segs and str(res.text).strip():
        segs = [{"start": 0.0, "end": dur, "text": str(res.text).strip()}]
    out = []
    for s in segs:
        if float(s.get("no_speech_prob", 0.0)) > 0.6 and float(s.get("avg_logprob", 0.0)) < -1.0:
            continue  # the same doubt faster-whisper applies to its own segments
        start = float(s.get("start") or 0.0)
        end = float(s.get("end") or dur)
        text = str(s.get("text", "")).strip()
        if text:
            out.append({"start": round(start_s + start, 2), "end": round(start_s + min(end, dur), 2), "text": text})
    return out


def _accepts(fn: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
