"""Run slow work (decoding files, asking the engine for status, listing audio devices) off the UI thread.

`run_async(fn, on_done, on_error, owner)` runs fn on Qt's global thread pool and calls back on the UI thread
through a queued signal. Callbacks are tied to `owner` (a QObject): when the owner is destroyed before the work
ends (a chip removed, a window closed) the result is dropped instead of reaching a deleted widget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger("nexus.app.tasks")
_pending: set[_Relay] = set()  # relays are kept alive here until their result is delivered


class _Relay(QObject):
    """Lives on the UI thread; the pool thread emits, Qt queues the call to the UI thread."""

    done = Signal(object)
    failed = Signal(object)


class _Job(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self.fn = fn
        self.relay = relay

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as e:  # every failure reaches the caller's on_error, never the pool
            self._emit(self.relay.failed, e)
        else:
            self._emit(self.relay.done, result)

    @staticmethod
    def _emit(signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the owner (and with it the relay) was deleted meanwhile: nobody to tell
            pass


def run_async(fn: Callable[[], Any], on_done: Callable[[Any], None],
              on_error: Callable[[Exception], None] | None = None, owner: QObject | None = None,
              pool: QThreadPool | None = None) -> None:
    relay = _Relay(owner)
    _pending.add(relay)

    def finish() -> None:
        _pending.discard(relay)
        relay.deleteLater()

    def done(result: Any) -> None:
        finish()
        on_done(result)

    def failed(err: Exception) -> None:
        finish()
        if on_error is not None:
            on_error(err)
        else:
            log.error("background task failed: %s", err, exc_info=err)

    relay.done.connect(done)
    relay.failed.connect(failed)
    if owner is not None:  # the owner goes: drop the relay (and with it the callbacks)
        relay.destroyed.connect(lambda *_: _pending.discard(relay))
    (pool or QThreadPool.globalInstance()).start(_Job(fn, relay))
