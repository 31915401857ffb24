"""The engine in this process, behind the one method ChatSession needs from an EngineClient (`submit`).

The voice loop runs inside the worker, next to the models, and keeps its turns in the same History as the text
chat through a ChatSession; this client lets that ChatSession drive the in-process Engine instead of a pipe.

A `Generation` is one engine.chat run on its own thread. Its events are kept and replayed to listeners that
join late, which is how speculation works: the loop starts the reply while the user is still pausing, and when
the turn is confirmed, ChatSession.send() builds the same request and `submit` *adopts* the running generation
(the Turn stores everything it missed) instead of starting over. A generation can be paused (barge-in: the
token loop blocks in emit, so decoding stops) and resumed (it was only a backchannel) or cancelled.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from nexus_engine.errors import NexusError
from nexus_engine.protocol import ChatRequest, Done, Error, Message

log = logging.getLogger("nexus.voice.chat")
Listener = Callable[[Message], None]


class Generation:
    def __init__(self, engine: Any, request: ChatRequest) -> None:
        self.engine = engine
        self.request = request
        self.cancel_event = threading.Event()
        self.finished = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._holds: set[str] = set()  # why the token loop is held (barge-in, speech synthesis)
        self._events: list[Message] = []
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()  # deliveries in order, a late listener's replay included
        self._thread = threading.Thread(target=self._run, name="nexus-voice-llm", daemon=True)

    def start(self) -> Generation:
        self._thread.start()
        return self

    def listen(self, fn: Listener) -> None:
        with self._lock:
            for msg in self._events:
                fn(msg)
            self._listeners.append(fn)

    def pause(self, why: str = "paused") -> None:
        with self._lock:
            self._holds.add(why)
            self._gate.clear()

    def resume(self, why: str = "paused") -> None:
        with self._lock:
            self._holds.discard(why)
            if not self._holds:
                self._gate.set()

    def cancel(self) -> None:
        self.cancel_event.set()
        self._gate.set()

    @property
    def paused(self) -> bool:
        return not self._gate.is_set()

    def _emit(self, msg: Message) -> None:
        while not self._gate.wait(0.05):  # paused: hold the token loop here
            if self.cancel_event.is_set():
                break
        with self._lock:
            self._events.append(msg)
            for fn in self._listeners:
                try:
                    fn(msg)
                except Exception:  # one listener's bug must not stop the answer for the others
                    log.exception("generation listener failed")

    def _work(self) -> dict[str, Any]:
        """Produce the answer's events through `_emit`; return its stats."""
        return self.engine.chat(self.request, self._emit, self.cancel_event)

    def _run(self) -> None:
        rid = self.request.id
        try:
            stats = self._work()
            if self.cancel_event.is_set():
                stats = {**stats, "finish": "cancelled"}
            self._emit(Done(id=rid, stats={**stats, "source": "voice"}))
        except NexusError as e:
            self._emit(Error.of(rid, e))
        except Exception as e:
            log.error("voice generation failed:\n%s", traceback.format_exc())
            self._emit(Error(id=rid, code="internal_error", message=f"{type(e).__name__}: {e}"))
        finally:
            self.finished.set()


class LocalHandle:
    """The part of RequestHandle that ChatSession's Turn uses."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.id = generation.request.id

    def cancel(self) -> None:
        self.generation.cancel()


class LocalClient:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.pending: Generation | None = None  # a speculative generation the next matching submit adopts
        self.next_generation: Callable[[ChatRequest], Generation] | None = None  # the next submit's, if not engine.chat
        self.last: Generation | None = None
        self.generations: list[Generation] = []  # every one started, so that closing can wait for them

    def start(self, request: ChatRequest) -> Generation:
        self.generations = [g for g in self.generations if not g.finished.is_set()]
        gen = Generation(self.engine, request).start()
        self.generations.append(gen)
        return gen

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every generation and wait for them: a thread still inside llama.cpp when the process exits
        aborts it (std::terminate from its thread pool)."""
        for g in self.generations:
            g.cancel()
        for g in self.generations:
            g.finished.wait(timeout)

    def submit(self, request: Message, on_event: Listener | None = None) -> LocalHandle:
        if not isinstance(request, ChatRequest):
            raise NexusError(f"the voice loop cannot send {request.type_name!r} requests")
        gen, self.pending = self.pending, None
        make, self.next_generation = self.next_generation, None
        if make is not None:  # a speech-to-speech persona answers this turn (duplex.py)
            if gen is not None:
                gen.cancel()
            gen = make(request).start()
            self.generations.append(gen)
        elif gen is None or gen.cancel_event.is_set() or not _same(gen.request, request):
            if gen is not None:
                gen.cancel()
            gen = self.start(request)
        self.last = gen
        if on_event is not None:
            gen.listen(on_event)
        return LocalHandle(gen)


def _same(a: ChatRequest, b: ChatRequest) -> bool:
    keys = ("messages", "tower", "role", "max_tokens", "temperature", "top_p", "repeat_penalty", "seed", "stop")
    return all(getattr(a, k) == getattr(b, k) for k in keys)
