"""A speech-to-speech persona (PersonaPlex / Moshi: the user's audio in, the persona's audio and text out) as the
voice loop's answer stage, in place of LLM ▸ TTS.

`SpeechGeneration` has a Generation's interface (listeners with replay, pause/resume/cancel, `finished`), so the
ChatSession stores the persona's text as the assistant's message and `Reply` plays it like any answer; the audio
is the persona's own voice (`speak`), not a TTS rendering of the text. The tower is held by the call's residency
lease with the ASR (which still writes the user's side of the history) and the VAD.

Moshi listens and speaks in the same 80 ms steps; here it answers each finished turn (the loop's turn taking, echo
cancellation and barge-in stay as they are), which is how it fits the cascade's interfaces.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nexus_engine.protocol import ChatRequest, TokenChunk
from nexus_engine.voice.audio_io import RATE, resample
from nexus_engine.voice.local_client import Generation

NO_TEXT = "(a spoken answer)"  # what the history shows when the persona's text stream was empty


def is_speech_persona(tower: Any) -> bool:
    return callable(getattr(tower, "respond", None))


class SpeechGeneration(Generation):
    def __init__(self, engine: Any, request: ChatRequest, tower: Any, audio: np.ndarray, name: str) -> None:
        super().__init__(engine, request)
        self.tower, self.user_audio, self.tower_name = tower, audio, name
        self.speech = np.zeros(0, dtype=np.float32)

    def speak(self, piece: str) -> np.ndarray:
        """The persona's own voice for its answer: all of it with the first piece, nothing after."""
        audio, self.speech = self.speech, np.zeros(0, dtype=np.float32)
        return audio

    def _work(self) -> dict[str, Any]:
        out = self.tower.respond(self.user_audio, RATE)
        wave = np.asarray(out.audio, dtype=np.float32).reshape(-1)
        self.speech = resample(wave, int(out.sample_rate), RATE) if out.sample_rate != RATE else wave
        if not self.cancel_event.is_set():
            self._emit(TokenChunk(id=self.request.id, text=str(out.text).strip() or NO_TEXT))
        return {"tower": self.tower_name, "path": "speech-to-speech", "finish": "stop",
                "audio_s": round(len(self.speech) / RATE, 2)}
