"""QtEngine: the app's handle on the engine worker. Owns an EngineClient and turns it into Qt signals.

Threads, and why the UI thread never waits on the engine:
- EngineClient calls its listener on its reader thread; `event` is emitted from there and Qt queues it onto
  the UI thread (the receivers live there).
- Calls that may block (starting the worker, which waits for its hello; a submit that has to restart a worker
  that crashed) run on one "engine calls" thread, in order, so two of them can never race to start two workers.
- Status requests (a round trip) run on a poller thread once a second; replies come back as `status`, together
  with a `sample` of the worker's resident memory measured by psutil.
Cancel is a single small write to the socketpair and is sent from the UI thread directly.

Crash handling is the client's (it restarts the worker and fails or replays requests); this class only watches
it and says so: `state_changed("crashed" | "restarted" | "failed", detail)` drives the main window's banner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from PySide6.QtCore import QObject, QTimer, Signal

from nexus_engine.client import EngineClient, Listener, RequestHandle
from nexus_engine.protocol import Hello, Message, VoiceControl, VoiceStart, VoiceStop

log = logging.getLogger("nexus.app.engine")
STARTING, READY, CRASHED, RESTARTED, FAILED, STOPPED = "starting", "ready", "crashed", "restarted", "failed", "stopped"


class QtEngine(QObject):
    event = Signal(object)  # every message from the worker (Message), delivered on the UI thread
    state_changed = Signal(str, str)  # state, a sentence for the banner / status bar
    status = Signal(object)  # nexus_engine.protocol.Status, about once a second
    sample = Signal(dict)  # {"t": monotonic seconds, "worker_rss": bytes}
    request_sent = Signal(object)  # requests the app sent (the monitor maps request ids to towers)

    def __init__(self, client: EngineClient | None = None, profile: str | None = None,
                 env: dict[str, str] | None = None, config_files: list[Path] | None = None,
                 poll_s: float = 1.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        if client is None:
            client = EngineClient(config_files=config_files, profile=profile, env=env)
        self.client = client
        # what the settings do not set (NEXUS_HOME in tests), kept when a restart applies new settings
        self._base_env = {k: v for k, v in client.env.items() if k not in (env or {})}
        client.listener = self._on_message  # reader thread
        self.state = STOPPED
        self.profile = profile
        self.poll_s = poll_s
        self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nexus-engine-calls")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._was_ready = False
        self.state_changed.connect(self._remember_state)
        self._health = QTimer(self)
        self._health.setInterval(250)
        self._health.timeout.connect(self._on_health)
        self.event.connect(self._on_event)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker in the background; `state_changed(READY)` follows its hello."""
        self.state_changed.emit(STARTING, "starting the engine…")
        self.call(self.client.start, on_error=lambda e: self.state_changed.emit(FAILED, _sentence(e)))
        self._health.start()
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="nexus-status-poller", daemon=True)
            self._poller.start()

    def restart(self, profile: str | None, env: dict[str, str]) -> None:
        """Stop the worker and start a new one with another profile or environment (settings changed)."""
        def again() -> None:
            self.client.close()
            self.client.profile, self.client.env = profile, {**self._base_env, **env}
            self.client.start()

        self.profile = profile
        self._was_ready = False
        self.state_changed.emit(STARTING, "restarting the engine with the new settings…")
        self.call(again, on_error=lambda e: self.state_changed.emit(FAILED, _sentence(e)))

    def close(self) -> None:
        """Stop polling and shut the worker down (blocks up to a few seconds: call at exit only)."""
        self._stop.set()
        self._health.stop()
        self._calls.shutdown(wait=False, cancel_futures=True)
        self.client.close()
        self.state = STOPPED

    # ---------------------------------------------------------------------------------------- calls
    def call(self, fn: Callable[..., Any], *args: Any,
             on_error: Callable[[Exception], None] | None = None) -> Future[Any]:
        """Run fn(*args) on the engine-calls thread; errors go to on_error (on that thread) or the log."""
        def guarded() -> Any:
            try:
                return fn(*args)
            except Exception as e:
                if on_error is None:
                    log.error("engine call %s failed: %s", getattr(fn, "__name__", fn), e)
                else:
                    on_error(e)
                raise

        return self._calls.submit(guarded)

    def submit(self, request: Message, on_event: Listener | None = None,
               on_error: Callable[[Exception], None] | None = None) -> Future[RequestHandle]:
        self.request_sent.emit(request)
        return self.call(self.client.submit, request, on_event, on_error=on_error)

    def cancel(self, request_id: str) -> None:
        self.client.cancel(request_id)

    # ---------------------------------------------------------------------------------------- voice
    def voice_start(self, settings: dict[str, Any], on_error: Callable[[Exception], None] | None = None) -> str:
        """Start a call on the worker's audio devices (VoiceStart fields); returns the call id, which every voice
        event of the call carries (they arrive through `event`)."""
        request = VoiceStart(**settings)
        self.submit(request, on_error=on_error)
        return request.id

    def voice_control(self, **changes: Any) -> None:
        """Mute, barge-in, push-to-talk or persona of the running call (a control message: acts at once)."""
        self.call(self.client.submit, VoiceControl(**changes))

    def voice_stop(self) -> None:
        self.call(self.client.submit, VoiceStop())

    # ------------------------------------------------------------------------------------ listening
    def _on_message(self, msg: Message) -> None:
        self.event.emit(msg)  # reader thread -> queued to the UI thread

    def _remember_state(self, state: str, detail: str) -> None:
        self.state = state

    def _on_event(self, msg: Message) -> None:
        if not isinstance(msg, Hello):
            return
        if self._was_ready:
            n = self.client.restarts
            self.state_changed.emit(RESTARTED, f"The engine stopped and was restarted (restart {n}); your "
                                               "conversation is safe. Send the interrupted message again.")
        else:
            self.state_changed.emit(READY, f"engine ready · profile {msg.profile} · worker pid {msg.pid}")
        self._was_ready = True

    def _on_health(self) -> None:
        # a dead worker between its crash and the restarted one's hello (or after the client gave up)
        if self.state in (READY, RESTARTED) and not self.client.alive:
            self.state_changed.emit(CRASHED, "The engine stopped. Restarting it; your conversation is safe.")

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            if not self.client.alive or self.state not in (READY, RESTARTED):
                continue
            pid = self.client.worker_pid
            try:
                rss = psutil.Process(pid).memory_info().rss if pid else 0
                self.sample.emit({"t": time.monotonic(), "worker_rss": rss})
                self.status.emit(self.client.status(timeout=2.0))
            except Exception as e:  # the worker died between the check and the call: the next poll sees it
                log.debug("status poll failed: %s", e)


def _sentence(err: Exception) -> str:
    hint = getattr(err, "hint", "")
    text = getattr(err, "message", str(err))
    return f"The engine could not start: {text}" + (f" ({hint})" if hint else "")
