"""Voice activity: 20 ms microphone frames -> one speech probability per 32 ms window (Silero's size).

`VadFrames` collects frames into 512-sample windows in a preallocated buffer and asks the VAD tower's stream
for a probability. It also applies an energy floor: a window quieter than `floor_db` is silence whatever the
model says (Silero can answer 0.6 on faint hum after a loud sound), so silence and room noise never start a
turn. What counts as the start and end of a *turn* is turns.py's job; this file only measures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from nexus_engine.voice.audio_io import RATE, level_db

WINDOW = 512
WINDOW_MS = WINDOW * 1000 / RATE  # 32 ms


@dataclass
class VadWindow:
    end_ms: float  # audio time at the end of the window, since the stream began
    prob: float  # speech probability after the energy floor
    raw: float  # the model's probability
    db: float  # RMS level in dBFS


class VadFrames:
    def __init__(self, model: Callable[[np.ndarray], float], floor_db: float = -55.0) -> None:
        self.model = model
        self.floor_db = floor_db
        self.buf = np.zeros(WINDOW, dtype=np.float32)
        self.fill = 0
        self.samples = 0  # samples consumed since the start

    def feed(self, frame: np.ndarray) -> Iterator[VadWindow]:
        """Add one frame; yield a VadWindow each time a 512-sample window completes."""
        i = 0
        while i < len(frame):
            n = min(WINDOW - self.fill, len(frame) - i)
            self.buf[self.fill:self.fill + n] = frame[i:i + n]
            self.fill += n
            i += n
            self.samples += n
            if self.fill == WINDOW:
                self.fill = 0
                db = level_db(self.buf)
                raw = self.model(self.buf)
                yield VadWindow(self.samples * 1000 / RATE, raw if db >= self.floor_db else 0.0, raw, db)

    def reset(self) -> None:
        self.fill = 0
