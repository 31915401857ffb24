"""ChatController: one conversation driven from the UI, through nexus_engine's ChatSession (so it lands in SQLite).

ChatSession.send/regenerate write the user's message and start the request; they run on the engine-calls thread
(QtEngine.call), because submitting may have to wait for a worker that is restarting. Each send gets a `key`
before it leaves the UI thread, and every event of that turn is re-emitted with its key: the view knows which
bubble a token belongs to even if tokens arrive before the `turn_started` signal does.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from app.attachments import Attachment
from app.engine_client import QtEngine
from nexus_engine.chat_session import ChatSession, Turn
from nexus_engine.errors import NexusError
from nexus_engine.history import History
from nexus_engine.protocol import TERMINAL, Message


class ChatController(QObject):
    turn_started = Signal(int, object)  # key, Turn (its message ids and request id)
    turn_event = Signal(int, object)  # key, Message of that turn (tokens, done, error)
    send_failed = Signal(int, str)  # key, why nothing was started (the message is still in the composer)
    conversation_changed = Signal(object)  # the conversation id (None: a new, still empty chat)

    def __init__(self, engine: QtEngine, history: History, profile: str | None = None,
                 persona: str = "", max_tokens: int = 512, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.history = history
        self.profile = profile
        self.max_tokens = max_tokens
        self.session = ChatSession(engine.client, history, system_prompt=persona or None, profile=profile)
        self.turn: Turn | None = None
        self.pending_key: int | None = None  # a send on its way to the engine, or a turn still streaming
        self._keys = 0

    @property
    def busy(self) -> bool:
        return self.pending_key is not None

    @property
    def conversation_id(self) -> int | None:
        return self.session.conversation_id

    def set_persona(self, persona: str) -> None:
        self.session.system_prompt = persona or None

    # ------------------------------------------------------------------------------------- actions
    def send(self, text: str, attachments: list[Attachment]) -> int:
        records = [a.record() for a in attachments]
        return self._start(lambda on_event: self.session.send(text, on_event, attachments=records,
                                                              max_tokens=self.max_tokens))

    def regenerate(self, message_id: int) -> int:
        return self._start(lambda on_event: self.session.regenerate(message_id, on_event,
                                                                    max_tokens=self.max_tokens))

    def stop(self) -> None:
        if self.turn is not None and not self.turn.done:
            self.turn.cancel()

    def new_chat(self) -> None:
        self._require_idle()
        self.session.new_conversation()
        self.conversation_changed.emit(None)

    def open(self, conversation_id: int) -> None:
        self._require_idle()
        self.session = ChatSession(self.engine.client, self.history, conversation_id,
                                   system_prompt=self.session.system_prompt, profile=self.profile)
        self.conversation_changed.emit(conversation_id)

    # ------------------------------------------------------------------------------------ internals
    def _require_idle(self) -> None:
        if self.busy:
            raise NexusError("an answer is still being written", "stop it first (Esc)")

    def _start(self, begin: Any) -> int:
        self._require_idle()
        self._keys += 1
        key = self._keys
        self.pending_key = key
        was_new = self.session.conversation_id is None

        def on_event(msg: Message) -> None:  # client reader thread
            self.turn_event.emit(key, msg)

        def run() -> None:  # engine-calls thread
            try:
                turn = begin(on_event)
            except NexusError as e:
                self.send_failed.emit(key, str(e))
                return
            self.turn = turn
            self.engine.request_sent.emit(self.session.last_request)
            self.turn_started.emit(key, turn)
            if was_new:
                self.conversation_changed.emit(self.session.conversation_id)

        self.engine.call(run)
        return key

    def on_turn_event(self, key: int, msg: Message) -> None:
        """Called by the view's slot for the same event (one queued call, so `busy` and the bubble agree): frees
        the controller when its turn ends."""
        if key == self.pending_key and isinstance(msg, TERMINAL):
            self.pending_key = None

    def on_send_failed(self, key: int, message: str) -> None:
        if key == self.pending_key:
            self.pending_key = None
