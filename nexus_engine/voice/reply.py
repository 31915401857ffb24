"""One spoken answer: the LLM's tokens ▸ Chunker ▸ TTS ▸ speaker, and the turn's latency timeline.

A `Reply` wraps a running generation (local_client.Generation). Its TTS thread synthesizes each piece as soon as
the chunker releases it; a speculative reply (started while the user may still go on) holds its audio until
`commit()`. `pause()` stops generation and synthesis at once (barge-in pending), `resume()` goes on (it was a
backchannel), `cancel()` ends both. The loop (loop.py) owns the replies; this file only runs one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nexus_engine.errors import NexusError
from nexus_engine.protocol import Done, Error, Message, TokenChunk, VoiceReply
from nexus_engine.voice.local_client import Generation
from nexus_engine.voice.tts import Chunker

if TYPE_CHECKING:
    from nexus_engine.voice.loop import VoiceLoop

log = logging.getLogger("nexus.voice.reply")


@dataclass
class Times:
    """One turn's timeline (monotonic seconds; 0 = did not happen)."""

    speech_end: float = 0.0
    final: float = 0.0
    asr_ms: float = 0.0
    final_audio_s: float = 0.0  # audio the last final transcribed (a long turn's earlier parts were done before)
    eot: float = 0.0
    llm_start: float = 0.0
    first_token: float = 0.0
    first_piece: float = 0.0
    tts_ms: float = 0.0
    first_audio_ready: float = 0.0
    first_audio: float = 0.0
    speculative: bool = False

    def breakdown(self) -> dict[str, Any]:
        def rel(t: float) -> float | None:
            return round((t - self.speech_end) * 1000, 1) if t and self.speech_end else None

        return {"vad_eot_ms": rel(self.eot), "asr_final_ms": rel(self.final), "asr_compute_ms": round(self.asr_ms, 1),
                "asr_final_audio_s": round(self.final_audio_s, 2),
                "llm_first_token_ms": round((self.first_token - self.llm_start) * 1000, 1)
                if self.first_token and self.llm_start else None,
                "llm_first_token_at_ms": rel(self.first_token), "tts_first_audio_ms": round(self.tts_ms, 1),
                "tts_first_audio_at_ms": rel(self.first_audio_ready), "total_ms": rel(self.first_audio),
                "speculative": self.speculative,
                # this process's monotonic clock, for benchmarks that know the true end of speech
                "speech_end_wall": self.speech_end, "first_audio_wall": self.first_audio}


class Reply:
    """One spoken answer: a generation's tokens ▸ Chunker ▸ TTS ▸ speaker. Speculative replies hold their audio
    until commit(); pause() stops both generation and synthesis (barge-in pending), cancel() ends them."""

    def __init__(self, loop: VoiceLoop, gen: Generation, committed: bool, times: Times) -> None:
        self.loop, self.gen, self.times = loop, gen, times
        self.committed = committed
        self.commit_at = time.monotonic() if committed else 0.0
        self.chunker = Chunker()
        self.pieces: queue.Queue[str | None] = queue.Queue()
        self.held: list[tuple[str, np.ndarray]] = []
        self.spoken: list[str] = []
        self.status = ""
        self.error = ""
        self.cancelled = threading.Event()
        self.synth_done = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self.message_id: int | None = None
        self.reported = False
        times.llm_start = times.llm_start or time.monotonic()
        self._thread = threading.Thread(target=self._speak, name="nexus-voice-tts", daemon=True)
        self._thread.start()
        gen.listen(self._on_event)

    # generation thread
    def _on_event(self, msg: Message) -> None:
        if isinstance(msg, TokenChunk):
            if not self.times.first_token:
                self.times.first_token = time.monotonic()
            for piece in self.chunker.feed(msg.text):
                if not self.times.first_piece:
                    self.times.first_piece = time.monotonic()
                self.pieces.put(piece)
        elif isinstance(msg, Done | Error):
            for piece in self.chunker.flush():
                self.pieces.put(piece)
            if isinstance(msg, Error):
                self.status, self.error = "error", msg.message
            else:
                self.status = "cancelled" if msg.stats.get("finish") == "cancelled" else "done"
            self.pieces.put(None)

    # TTS thread
    def _speak(self) -> None:
        try:
            while True:
                piece = self.pieces.get()
                while not self.gate.wait(0.05) and not self.cancelled.is_set():
                    pass
                if piece is None or self.cancelled.is_set():
                    return
                t0 = time.perf_counter()
                # the LLM waits while a piece is synthesized: on a small CPU the two would slow each other several
                # times over (llama.cpp's threads spin), and the audio of one piece lasts far longer than it takes
                # to write the next one
                self.gen.pause("tts")
                try:  # a speech-to-speech persona brings its own voice
                    speak = getattr(self.gen, "speak", None)
                    audio = speak(piece) if speak is not None else self.loop.speaker(piece)
                except NexusError as e:
                    log.warning("could not speak %r: %s", piece, e)
                    continue
                finally:
                    self.gen.resume("tts")
                if not self.times.first_audio_ready:
                    self.times.tts_ms = (time.perf_counter() - t0) * 1000
                    self.times.first_audio_ready = time.monotonic()
                with self._lock:
                    if self.cancelled.is_set():
                        return
                    if self.committed:
                        self._play(piece, audio)
                    else:
                        self.held.append((piece, audio))
        finally:
            self.synth_done.set()

    def _play(self, piece: str, audio: np.ndarray) -> None:
        self.loop.audio.play(audio)
        self.spoken.append(piece)
        self.loop.emit(VoiceReply(id=self.loop.call_id, text=piece, message_id=self.message_id,
                                  conversation_id=self.loop.session.conversation_id))

    # capture thread
    def commit(self, message_id: int | None) -> None:
        with self._lock:
            self.committed, self.commit_at, self.message_id = True, time.monotonic(), message_id
            for piece, audio in self.held:
                self._play(piece, audio)
            self.held.clear()

    def pause(self) -> None:
        self.gate.clear()
        self.gen.pause()

    def resume(self) -> None:
        self.gate.set()
        self.gen.resume()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            self.held.clear()
        self.gate.set()
        self.gen.cancel()
        self.pieces.put(None)

    @property
    def finished(self) -> bool:
        return self.synth_done.is_set() and self.gen.finished.is_set()
