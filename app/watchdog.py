"""Measure how long the UI thread stops responding: a precise timer ticks every few ms on the UI thread, and the
longest gap between two ticks (minus the interval) is the longest stall anything caused meanwhile.

Used by the tests (the goal is < 50 ms while an answer streams and while an image is dropped) and, with
NEXUS_UI_WATCHDOG=1, by the app itself, which then logs every stall above the threshold.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, Qt, QTimer

log = logging.getLogger("nexus.app.watchdog")


class StallWatchdog(QObject):
    def __init__(self, interval_ms: int = 4, log_above_ms: float | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.log_above_ms = log_above_ms
        self.longest_ms = 0.0
        self.ticks = 0
        self._last: float | None = None
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_tick)

    def start(self) -> None:
        self.reset()
        self._timer.start()

    def stop(self) -> float:
        self._timer.stop()
        self._last = None
        return self.longest_ms

    def reset(self) -> None:
        self.longest_ms, self.ticks, self._last = 0.0, 0, None

    def _on_tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            stall = (now - self._last) * 1000 - self.interval_ms
            if stall > self.longest_ms:
                self.longest_ms = stall
            if self.log_above_ms is not None and stall > self.log_above_ms:
                log.warning("UI thread stalled for %.0f ms", stall)
        self._last = now
        self.ticks += 1
