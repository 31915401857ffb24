"""The voice side of the engine worker: calls (VoiceStart / VoiceStop / VoiceControl) and file transcription.

Call messages are CONTROL-tier: the worker's reader thread hands them here at once, so mute, barge-in and hang
up act immediately even while the job thread is busy (a long transcription, an image). A call runs on its own
thread (voice/loop.py) with the worker's audio devices; its events carry the VoiceStart id and the call ends
with Done (its turn statistics) or a typed Error (no microphone, a missing model). One call at a time.

TranscribeRequest is ordinary DATA work on the job thread: Progress and Transcript events as it goes, Cancel
between chunks.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np

from nexus_engine.errors import BadInputError, NexusError
from nexus_engine.history import History
from nexus_engine.protocol import (
    Done,
    Error,
    Message,
    Progress,
    Started,
    TranscribeRequest,
    Transcript,
    VoiceControl,
    VoiceStart,
    VoiceStop,
)
from nexus_engine.voice.asr import phantom_reason, transcribe_long
from nexus_engine.voice.audio_device import SoundDeviceAudio
from nexus_engine.voice.audio_files import decode_file
from nexus_engine.voice.audio_io import RATE, level_db, mono_float
from nexus_engine.voice.loop import DEFAULT_PERSONA, VoiceLoop, VoiceSettings
from nexus_engine.voice.turns import TurnConfig

log = logging.getLogger("nexus.voice.service")
Send = Callable[[Message], None]
VOICE_MESSAGES = (VoiceStart, VoiceStop, VoiceControl)


def settings_from(msg: VoiceStart) -> VoiceSettings:
    known = {f.name for f in fields(TurnConfig)}
    unknown = set(msg.turn) - known
    if unknown:
        raise BadInputError(f"unknown turn-taking settings: {', '.join(sorted(unknown))}",
                            f"known: {', '.join(sorted(known))}")
    return VoiceSettings(persona=msg.persona or DEFAULT_PERSONA, conversation_id=msg.conversation_id, asr=msg.asr,
                         tts=msg.tts, llm=msg.llm, voice=msg.voice, barge_in=msg.barge_in,
                         push_to_talk=msg.push_to_talk, aec=msg.aec, max_tokens=msg.max_tokens,
                         turn=TurnConfig(**{k: float(v) for k, v in msg.turn.items()}))


class VoiceService:
    def __init__(self, engine: Any, send: Send) -> None:
        self.engine = engine
        self.send = send
        self._lock = threading.Lock()
        self._call: tuple[str, VoiceLoop | None, threading.Thread, threading.Event] | None = None

    def handle(self, msg: Message) -> None:
        """A call message from the reader thread: never blocks."""
        if isinstance(msg, VoiceStart):
            self._start(msg)
        elif isinstance(msg, VoiceStop):
            self.stop()
            self.send(Done(id=msg.id))
        elif isinstance(msg, VoiceControl):
            loop = self._call[1] if self._call is not None else None
            if loop is None:
                self.send(Error(id=msg.id, code=BadInputError.code, message="no call is running",
                                hint="start a call first"))
                return
            loop.control(mute=msg.mute, barge_in=msg.barge_in, ptt=msg.ptt, persona=msg.persona)
            self.send(Done(id=msg.id))

    def _start(self, msg: VoiceStart) -> None:
        with self._lock:
            if self._call is not None and self._call[2].is_alive():
                self.send(Error(id=msg.id, code=BadInputError.code, message="a call is already running",
                                hint="hang up first"))
                return
            stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(msg, stop), name="nexus-voice-call", daemon=True)
            self._call = (msg.id, None, thread, stop)
        thread.start()

    def _run(self, msg: VoiceStart, stop: threading.Event) -> None:
        self.send(Started(id=msg.id))  # a crash after this is reported, not replayed into a second call
        try:
            audio = SoundDeviceAudio(msg.input_device or None, msg.output_device or None)
            history = History(msg.history) if msg.history else None
            loop = VoiceLoop(self.engine, audio, settings_from(msg), self.send, msg.id, history)
            with self._lock:
                if self._call is not None and self._call[0] == msg.id:
                    self._call = (msg.id, loop, self._call[2], stop)
            try:
                self.send(Done(id=msg.id, stats=loop.run(stop)))
            finally:
                if history is not None:
                    history.close()
        except NexusError as e:
            self.send(Error.of(msg.id, e))
        except Exception as e:
            log.error("voice call failed:\n%s", traceback.format_exc())
            self.send(Error(id=msg.id, code="internal_error", message=f"the call failed: {type(e).__name__}: {e}",
                            hint="this is a bug in Nexus; the worker log has the details"))

    def stop(self, timeout: float = 10.0) -> None:
        call = self._call
        if call is None:
            return
        call[3].set()
        if call[2] is not threading.current_thread():
            call[2].join(timeout)

    close = stop


# ------------------------------------------------------------------------------------------- files
def transcribe(engine: Any, msg: TranscribeRequest, send: Send, cancel: threading.Event) -> dict[str, Any]:
    """`nexus transcribe` and the app's "transcribe a file": the whole file, or in chunks with progress."""
    if not msg.path:
        raise BadInputError("no file to transcribe")
    name = engine.tower_name(msg.tower, "hearing_long" if msg.long else "hearing")
    with engine.residency.acquire((name,), emit=send, request_id=msg.id) as lease:
        tower = lease.tower(name)
        if msg.long:
            return _long(tower, msg, send, cancel)
        audio = mono_float(decode_file(msg.path))  # NaN samples are refused before the silence check reads them
        if audio.size == 0:
            raise BadInputError(f"{msg.path} holds no audio")
        t0 = time.perf_counter()
        if level_db(audio) < -60:  # digital silence: Whisper would invent a sentence
            return {"text": "", "duration_s": round(len(audio) / RATE, 2), "note": "the file is silent"}
        res = tower.transcribe(audio, RATE)
        text = str(res.text).strip()
        doubt = phantom_reason(res, audio, speech_ms=len(audio) / RATE * 1000)
        send(Transcript(id=msg.id, text=text, final=True, segments=list(getattr(res, "segments", []) or [])))
        out = {"text": text, "duration_s": round(len(audio) / RATE, 2), "tower": name,
               "compute_s": round(time.perf_counter() - t0, 2)}
        return {**out, "note": f"probably not speech: {doubt}"} if doubt else out


def _long(tower: Any, msg: TranscribeRequest, send: Send, cancel: threading.Event) -> dict[str, Any]:
    t0 = time.perf_counter()

    def progress(done_s: float, total_s: float, new: list[dict[str, Any]]) -> None:
        rate = done_s / max(1e-3, time.perf_counter() - t0)  # seconds of audio per second of compute
        eta = (total_s - done_s) / rate if rate > 0 else None
        send(Progress(id=msg.id, step=int(done_s), total=int(np.ceil(total_s)),
                      message=f"{done_s / 60:.1f} of {total_s / 60:.1f} min", eta_s=eta))
        if new:
            send(Transcript(id=msg.id, text=" ".join(s["text"] for s in new), final=True, segments=new))

    return transcribe_long(tower, msg.path, on_progress=progress, cancel=cancel)
