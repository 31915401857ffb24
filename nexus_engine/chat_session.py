"""A chat session: one conversation, kept in History, answered by the engine. Shared by `nexus chat` and the app.

Write order makes sure nothing is lost: the user's message is committed before the request is sent, the answer
is created at once with status 'streaming' and its text is flushed while it streams (the first token at once,
then at most every FLUSH_INTERVAL_S, not per token: a commit per token would cost more than decoding a token of
the starter model), and the final text, status and stats are written when the stream ends.

Threads: send() and regenerate() run on the caller's thread (the UI thread in the app); events arrive on the
EngineClient's reader thread, where the Turn updates itself and SQLite and then calls the caller's `on_event`
(the CLI prints tokens there; the app re-emits them as Qt signals, which queue them onto the UI thread).

Regenerate keeps the old answer: it is marked superseded by the new one (History.supersede), hidden from
messages() and from the prompt, but still in the file, so nothing the user once saw is deleted.

Attachments (files the user attached to a message) are stored with the user's message (History.add_attachment)
and sent on that turn's ChatRequest as {"path", "kind", "mime", "name"} references the worker can read; regenerating a
turn sends the same files again. The caller validates and copies the files first (the app does it off the UI
thread, see app/attachments.py): this module only records what it is given.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from nexus_engine.client import EngineClient, RequestHandle
from nexus_engine.errors import BadInputError, CancelledError, NexusError, WorkerCrashedError
from nexus_engine.history import History, StoredMessage
from nexus_engine.protocol import ChatRequest, Done, Error, Message, TokenChunk, new_id

log = logging.getLogger("nexus.chat")
FLUSH_INTERVAL_S = 0.25
FINAL = ("done", "cancelled", "interrupted", "error")
EventCallback = Callable[[Message], None]


class Turn:
    """One answer being written: its request, its assistant message, its text so far and its final status."""

    def __init__(self, history: History, request_id: str, message_id: int, user_message_id: int,
                 on_event: EventCallback | None) -> None:
        self.history = history
        self.request_id = request_id
        self.message_id = message_id
        self.user_message_id = user_message_id
        self.on_event = on_event
        self.status = "streaming"
        self.error: str | None = None
        self.stats: dict[str, Any] = {}
        self._handle: RequestHandle | None = None
        self._parts: list[str] = []
        self._last_flush = 0.0  # so the first token is written at once
        self._lock = threading.Lock()
        self._finished = threading.Event()

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)

    @property
    def done(self) -> bool:
        """The final status is stored (the caller's on_event may still be handling the last event)."""
        return self.status in FINAL

    def cancel(self) -> None:
        """Stop the answer; the text so far is kept and the status becomes 'cancelled'."""
        if self._handle is not None and not self.done:
            self._handle.cancel()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the answer is final and stored; return its status (done|cancelled|interrupted|error)."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the answer (request {self.request_id}) did not finish within {timeout} s")
        return self.status

    # ------------------------------------------------------------------ events (client reader thread)
    def _on_event(self, msg: Message) -> None:
        if self._finished.is_set():
            return
        try:
            if isinstance(msg, TokenChunk):
                self._on_token(msg.text)
            elif isinstance(msg, Done):
                finish = "cancelled" if msg.stats.get("finish") == "cancelled" else "done"
                self._finish(finish, None, msg.stats)
            elif isinstance(msg, Error):
                self._on_error(msg)
        finally:
            try:
                if self.on_event is not None:
                    self.on_event(msg)
            finally:
                if self.status in FINAL:
                    self._finished.set()  # after the caller saw the terminal event, so its output comes first

    def _on_token(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)
            now = time.monotonic()
            if now - self._last_flush < FLUSH_INTERVAL_S:
                return
            self._last_flush = now
            content = "".join(self._parts)
        self._store(content=content)

    def _on_error(self, msg: Error) -> None:
        if msg.code == WorkerCrashedError.code:
            # the worker died mid-answer: keep what was written; the client has restarted the worker already
            self._finish("interrupted", msg.message, {"code": msg.code, "hint": msg.hint})
        elif msg.code == CancelledError.code:
            self._finish("cancelled", None, {"code": msg.code})
        else:
            text = f"{msg.message}\nhint: {msg.hint}" if msg.hint else msg.message
            self._finish("error", text, {"code": msg.code, "hint": msg.hint})

    def _finish(self, status: str, error: str | None, stats: dict[str, Any]) -> None:
        with self._lock:
            content = "".join(self._parts)
        self._store(content=content, status=status, error=error, meta={"request_id": self.request_id, **stats})
        # set after the write: once a turn reads as done, SQLite has its final state and the next send()
        # (which may come from the UI thread before this thread returns) builds its prompt from it
        self.error, self.stats, self.status = error, stats, status

    def _store(self, **fields: Any) -> None:
        # a write failing (disk full, history closed at shutdown) must not stop the stream or the turn ending
        try:
            self.history.update_message(self.message_id, **fields)
        except Exception:
            log.exception("could not store the answer %s", self.message_id)


class ChatSession:
    """One conversation with the engine. The conversation is created on the first send, so opening a new chat
    and leaving it empty leaves nothing behind in the history."""

    def __init__(self, client: EngineClient, history: History, conversation_id: int | None = None,
                 system_prompt: str | None = None, profile: str | None = None) -> None:
        self.client = client
        self.history = history
        self.system_prompt = system_prompt
        self.profile = profile
        if conversation_id is not None and history.get_conversation(conversation_id) is None:
            raise BadInputError(f"there is no conversation {conversation_id}", "`nexus chat --list` shows them")
        self.conversation_id = conversation_id
        self.last_request: ChatRequest | None = None  # what the engine was last asked (tests, debugging)
        self._active: Turn | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._active is not None and not self._active.done

    def messages(self) -> list[StoredMessage]:
        return [] if self.conversation_id is None else self.history.messages(self.conversation_id)

    def new_conversation(self) -> None:
        """Start over; the new conversation is created by the next send()."""
        with self._lock:
            self._check_idle()
            self.conversation_id = None

    def send(self, text: str, on_event: EventCallback | None = None,
             attachments: list[dict[str, Any]] | None = None, **gen_params: Any) -> Turn:
        """Store `text` as the user's message and start the answer. gen_params: ChatRequest fields
        (max_tokens, temperature, top_p, seed, stop, tower, role); None means the default.

        attachments: [{"path": absolute path, "kind": image|video|audio|file, "mime", "bytes", "sha256",
        "meta": {...}}], stored with the message and referenced on the request."""
        if not text.strip():
            raise BadInputError("the message is empty", "type something to send")
        files = [_attachment(a) for a in attachments or []]
        gen_params = _given(gen_params)
        with self._lock:
            self._check_idle()
            if self.conversation_id is None:
                self.conversation_id = self.history.create_conversation(profile=self.profile)
                if self.system_prompt:  # stored so the conversation reopens with the same instructions
                    self.history.add_message(self.conversation_id, "system", self.system_prompt)
            user_id = self.history.add_message(self.conversation_id, "user", text)
            for a in files:
                self.history.add_attachment(user_id, **a)
            return self._start(user_id, [], on_event, gen_params)

    def regenerate(self, message_id: int, on_event: EventCallback | None = None, **gen_params: Any) -> Turn:
        """Ask the last user message again. `message_id` is that message or an answer to it; the answers it
        had are kept but marked superseded by the new one. Earlier turns cannot be regenerated (the later
        turns were answered from them)."""
        gen_params = _given(gen_params)
        with self._lock:
            self._check_idle()
            msgs = self.messages()
            users = [m for m in msgs if m.role == "user"]
            target = next((m for m in msgs if m.id == message_id), None)
            if target is None or not users:
                raise BadInputError(f"message {message_id} is not in this conversation")
            last_user = users[-1]
            if target.id < last_user.id:
                raise BadInputError("only the last answer can be regenerated",
                                    "later turns were answered from this one; send a new message instead")
            old = [m.id for m in msgs if m.id > last_user.id and m.role == "assistant"]
            return self._start(last_user.id, old, on_event, gen_params)

    # ---------------------------------------------------------------------------------- internals
    def _check_idle(self) -> None:
        if self.busy:
            raise BadInputError("an answer is still being written", "wait for it or cancel it first")

    def _start(self, user_id: int, supersede: list[int], on_event: EventCallback | None,
               gen_params: dict[str, Any]) -> Turn:
        assert self.conversation_id is not None
        request_id = new_id()
        # owner_pid lets recover_interrupted() tell a live stream from one whose process died
        answer_id = self.history.add_message(self.conversation_id, "assistant", "", status="streaming",
                                             meta={"request_id": request_id, "owner_pid": os.getpid()})
        if supersede:
            self.history.supersede(supersede, answer_id)
        files = [_reference(a) for a in self.history.attachments(user_id)]
        request = ChatRequest(id=request_id, messages=self._context(), attachments=files,  # after supersede
                              **gen_params)
        turn = Turn(self.history, request.id, answer_id, user_id, on_event)
        self._active = turn
        self.last_request = request
        try:
            turn._handle = self.client.submit(request, turn._on_event)
        except NexusError as e:  # the engine could not even start: end the turn the same way a stream would
            turn._on_event(Error.of(request.id, e))
        return turn

    def _context(self) -> list[dict[str, str]]:
        """The prompt for the next answer, from what is stored: the system prompt, then every turn, skipping
        answers with no text (failed or cancelled before the first token). Consecutive messages of one role
        (a question whose answer failed, then another) are joined, since many chat templates insist that
        user and assistant alternate."""
        assert self.conversation_id is not None
        out: list[dict[str, str]] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        seen: dict[int, str] = {}  # position in `out` of an earlier question -> what its files turned out to hold
        for m in self.history.messages(self.conversation_id):
            if m.role == "system" and self.system_prompt:
                continue  # the session's own system prompt replaces the stored one
            if m.role == "assistant" and out and out[-1]["role"] == "user" and (note := _files_note(m.meta)):
                seen[len(out) - 1] = note
            if m.role == "assistant" and (m.status == "streaming" or not m.content.strip()):
                continue
            if out and out[-1]["role"] == m.role:
                out[-1] = {"role": m.role, "content": f"{out[-1]['content']}\n\n{m.content}"}
            else:
                out.append({"role": m.role, "content": m.content})
        # an earlier turn's attachments are not sent again: what was heard or seen in them goes into the system
        # message, so "and what did she say about the rent?" still has the voice note's words. Not into the user
        # turns: the router reads those, and a photo two turns ago must not make "name three colours" a drawing
        # request. The last question's own files go with the request.
        last_user = max((i for i, x in enumerate(out) if x["role"] == "user"), default=-1)
        earlier = [note for i, note in sorted(seen.items()) if i != last_user]
        if earlier:
            from nexus_engine.vision.compose import with_report

            out = with_report(out, "Files the user attached earlier in this conversation: " + " ".join(earlier))
        return out


NOTE_CHARS = 1500  # per earlier turn: enough for a voice note's gist without crowding out the conversation


def _files_note(stats: dict[str, Any]) -> str:
    """`(attached: voice.flac, heard: "…"; an image: shows a cat)` from an answer's stored stats, or ""."""
    parts = []
    for h in stats.get("heard") or []:
        name = h.get("name") or os.path.basename(str(h.get("path", "")))
        parts.append(f"{name}, heard: \u201c{h['text']}\u201d" if h.get("text") else
                     f"{name}: {h.get('note') or 'nothing heard'}")
    parts += [f"picture {i + 1}: {p}" for i, p in enumerate(stats.get("perception") or [])]
    if not parts:
        return ""
    text = "; ".join(parts)
    if len(text) > NOTE_CHARS:
        text = text[:NOTE_CHARS].rsplit(" ", 1)[0] + " \u2026"
    return f"(attached: {text})"


def _reference(a: Any) -> dict[str, Any]:
    """What a ChatRequest carries of a stored attachment; name: the user's file name (the copy is named by hash)."""
    ref = {"path": a.path, "kind": a.kind, "mime": a.mime}
    return {**ref, "name": a.meta["name"]} if a.meta.get("name") else ref


def _attachment(a: dict[str, Any]) -> dict[str, Any]:
    """Check one attachment record before anything is stored (a bad one must not leave half a turn behind)."""
    path = a.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise BadInputError(f"an attachment needs an absolute path, got {path!r}")
    allowed = ("path", "kind", "mime", "bytes", "sha256", "meta")
    unknown = set(a) - set(allowed)
    if unknown:
        raise BadInputError(f"unknown attachment fields: {', '.join(sorted(unknown))}")
    return {"kind": "file", **{k: a[k] for k in allowed if k in a}}


def _given(gen_params: dict[str, Any]) -> dict[str, Any]:
    """Drop None (so the CLI can pass its unset options through) and fail on a bad name before storing."""
    given = {k: v for k, v in gen_params.items() if v is not None}
    ChatRequest(**given)
    return given
