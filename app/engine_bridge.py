"""Bridges EngineClient (callbacks on its reader thread) to Qt signals delivered on the UI thread."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from nexus_engine.client import EngineClient
from nexus_engine.protocol import Message


class EngineBridge(QObject):
    """Owns the EngineClient; every engine event is re-emitted as `event` on the UI thread (queued)."""

    event = Signal(object)

    def __init__(self, profile: str | None = None) -> None:
        super().__init__()
        self.client = EngineClient(profile=profile, listener=self._on_message)

    def _on_message(self, msg: Message) -> None:
        self.event.emit(msg)  # called from the client's reader thread; Qt queues it to the UI thread

    def close(self) -> None:
        self.client.close()
