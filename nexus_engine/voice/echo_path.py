"""The voice loop's echo path, per microphone frame: find the bulk delay between what the speaker played and what
the microphone heard, cancel the echo against that reference, and keep the echo gate's view of the residual; plus
the call's measured echo return loss enhancement (ERLE) for its report.

The canceller learns one echo path. When the device's timing or the estimated delay changes, what it learned is
wrong: it starts over, and the gate looks only at the recent reference until it has relearned.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from nexus_engine.voice import aec as aec_mod
from nexus_engine.voice.audio_io import FRAME, RATE, AudioBackend

log = logging.getLogger("nexus.voice.echo")
DELAY_MARGIN = 160  # samples: the reference starts 10 ms before the estimated echo delay (estimates jitter)
GATE_TAIL_MS = 160.0  # with the echo's delay compensated, the echo comes from this much of the recent reference


class EchoPath:
    def __init__(self, enabled: bool) -> None:
        self.aec = aec_mod.create() if enabled else aec_mod.Passthrough()
        self.gate = aec_mod.EchoGate() if enabled else aec_mod.EchoGate(margin_db=-200.0)
        self.delay = aec_mod.DelayEstimator()
        self._realigned = 0
        self._shift = 0
        self._energy = [0.0, 0.0, 0]  # microphone and cleaned energy while only Nexus speaks, frames

    def cancel(self, raw: np.ndarray, audio: AudioBackend) -> tuple[np.ndarray, np.ndarray]:
        """(the frame without Nexus's own voice, the reference it was cancelled against)."""
        ref = audio.reference()
        delay = self.delay.feed(raw, ref)
        shift = max(0, delay - DELAY_MARGIN) if delay is not None else 0
        if audio.realigned != self._realigned or shift != self._shift:  # the learned echo path is wrong now
            log.info("echo path: delay %s samples (corr %.2f), device realigned %d times", delay, self.delay.corr,
                     audio.realigned)
            self._realigned, self._shift = audio.realigned, shift
            self.aec.reset()
            if shift:
                self.gate.aligned(GATE_TAIL_MS)
        if shift:
            ref = audio.reference(shift)
        return self.aec.process(raw, ref), ref

    def measure(self, raw: np.ndarray, clean: np.ndarray, only_nexus: bool) -> None:
        """Count a frame in which Nexus speaks and the user does not towards the call's ERLE."""
        if only_nexus and self.gate.ref_db >= -45:
            e = self._energy
            e[0] += float(np.dot(raw, raw))
            e[1] += float(np.dot(clean, clean))
            e[2] += 1

    def report(self) -> dict[str, Any]:
        mic, clean, n = self._energy
        erle = 10 * np.log10(mic / max(clean, 1e-12)) if n and mic > 1e-9 else None
        delay = self.delay.delay
        return {"canceller": self.aec.name, "speaking_s": round(n * FRAME / RATE, 2),
                "delay_ms": round(delay * 1000 / RATE, 1) if delay is not None else None,
                "erle_db": round(float(erle), 1) if erle is not None else None,
                "residual_db": round(self.gate.residual_db, 1)}

    def close(self) -> None:
        self.aec.close()
