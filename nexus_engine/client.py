"""EngineClient: owns the worker process, talks the protocol, survives the worker dying. No Qt, no torch.

A reader thread routes worker events to per-request handles (and to an optional listener for everything,
which is how the app's monitor sees tower events). When the worker dies (EOF on the pipe), requests that
never started are replayed on a fresh worker; requests that were running end with a WorkerCrashedError,
because replaying them could repeat side effects or crash the worker again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nexus_engine import paths, safety
from nexus_engine.errors import NexusError, WorkerCrashedError, error_from_dict
from nexus_engine.protocol import (
    TERMINAL,
    Cancel,
    ChatRequest,
    Done,
    Error,
    Hello,
    Message,
    Ping,
    Shutdown,
    Started,
    Status,
    StatusRequest,
    decode,
)

log = logging.getLogger("nexus.client")
Listener = Callable[[Message], None]


class RequestHandle:
    """One request's event stream. Iterate it (blocking) or give `on_event` to get callbacks."""

    def __init__(self, client: EngineClient, request: Message, on_event: Listener | None) -> None:
        self.client = client
        self.request = request
        self.id = request.id
        self.on_event = on_event
        self.started = False
        self.sent_on: int | None = None  # the worker generation it was last sent to (None: not sent yet)
        self.result: Done | Error | None = None
        self._events: queue.Queue[Message] = queue.Queue()
        self._finished = threading.Event()

    def _deliver(self, msg: Message) -> None:
        if self._finished.is_set():
            return
        if isinstance(msg, Started):
            self.started = True
        if isinstance(msg, TERMINAL):
            self.result = msg  # type: ignore[assignment]
        self._events.put(msg)
        if self.on_event is not None:
            try:
                self.on_event(msg)
            except Exception:  # a listener bug must not kill the reader thread
                log.exception("request listener failed")
        if isinstance(msg, TERMINAL):
            self._finished.set()

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self._events.get()
            yield msg
            if isinstance(msg, TERMINAL):
                return

    def cancel(self) -> None:
        self.client.cancel(self.id)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> Done:
        """Block until the request ends; return Done or raise its typed error."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        if isinstance(self.result, Error):
            raise error_from_dict(vars(self.result))
        assert isinstance(self.result, Done)
        return self.result

    def text(self, timeout: float | None = None) -> str:
        """All token text of a chat request (blocking)."""
        self.wait(timeout)
        parts = []
        while not self._events.empty():
            msg = self._events.get()
            if getattr(msg, "type_name", "") == "token":
                parts.append(msg.text)  # type: ignore[attr-defined]
        return "".join(parts)


class EngineClient:
    def __init__(self, config_files: list[Path] | None = None, profile: str | None = None,
                 env: dict[str, str] | None = None, listener: Listener | None = None,
                 max_restarts: int = 5, restart_window_s: float = 60.0) -> None:
        if config_files is None:
            config_files = [paths.SHIPPED_MODELS_TOML]
            if paths.user_models_toml().exists():
                config_files.append(paths.user_models_toml())
        self.config_files = [str(p) for p in config_files]
        self.profile = profile
        self.env = dict(env or {})
        if "NEXUS_HOME" in os.environ:
            self.env.setdefault("NEXUS_HOME", os.environ["NEXUS_HOME"])
        self.listener = listener
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.restarts = 0
        self.last_recovery_ms: float | None = None
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._handles: dict[str, RequestHandle] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._hello = threading.Event()
        self._startup_error: Error | None = None
        self._crash_times: deque[float] = deque()
        self._closed = False
        self._generation = 0

    # ------------------------------------------------------------------------------- process
    @property
    def worker_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        with self._lock:
            self._closed = False
            if self.alive and self._hello.is_set():
                return
            if not self.alive:  # a worker that is starting (the reader's restart) is waited for, not doubled
                self._spawn()
        self._wait_hello(timeout)

    def _spawn(self) -> None:
        # A fresh interpreter (not fork: torch's threads deadlock after fork; not multiprocessing's spawn,
        # which re-imports the caller's __main__). The pipe is an anonymous socketpair handed down as an fd,
        # so no other process or user can connect to it.
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._hello.clear()
        self._startup_error = None
        spec = json.dumps({"fd": child_sock.fileno(), "config_files": self.config_files, "profile": self.profile})
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env.update({k: v for k, v in safety.offline_env(env).items() if k not in env})  # hub off unless allowed
        proc = subprocess.Popen([sys.executable, "-m", "nexus_engine.worker", spec], pass_fds=(child_sock.fileno(),),
                                env=env, stdin=subprocess.DEVNULL, close_fds=True)
        child_sock.close()  # so that the worker's death shows up as EOF here
        parent = Connection(parent_sock.detach())
        with self._send_lock:  # the connection and its generation change together (see _send and the replay)
            self._generation += 1
            generation = self._generation
            self._proc, self._conn = proc, parent
        threading.Thread(target=self._read, args=(parent, proc, generation), name="nexus-client-reader",
                         daemon=True).start()

    def _wait_hello(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._hello.wait(0.05):
            if self._startup_error is not None:
                raise error_from_dict(vars(self._startup_error))
            if time.monotonic() > deadline:
                raise WorkerCrashedError(f"the engine worker did not start within {timeout:.0f} s",
                                         "run `nexus doctor` to check the installation")
            if self._proc is not None and self._proc.poll() is not None and self._startup_error is None:
                time.sleep(0.1)  # let the reader deliver a startup error before judging
                if self._startup_error is None and not self._hello.is_set():
                    raise WorkerCrashedError(f"the engine worker exited at start (code {self._proc.returncode})",
                                             "run `nexus doctor`; the worker log is in the data dir")

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            proc, conn = self._proc, self._conn
        if proc is None:
            return
        try:
            self._send(Shutdown())
        except NexusError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        if conn is not None:
            conn.close()
        self._fail_all(WorkerCrashedError("the engine was shut down before the request finished"))

    def __enter__(self) -> EngineClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- reading
    def _read(self, conn: Connection, proc: subprocess.Popen[bytes], generation: int) -> None:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                msg = decode(data)
            except NexusError as e:
                log.error("undecodable message from the worker: %s", e)
                continue
            self._dispatch(msg)
        try:
            exitcode: int | None = proc.wait(2.0)
        except subprocess.TimeoutExpired:  # pipe closed but process stuck: make it exit
            proc.kill()
            exitcode = proc.wait()
        self._on_worker_exit(generation, exitcode)

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            self._hello.set()
        elif isinstance(msg, Error) and not msg.id and not self._hello.is_set():
            self._startup_error = msg
        with self._lock:
            handle = self._handles.get(msg.id)
            if handle is not None and isinstance(msg, TERMINAL):
                del self._handles[msg.id]
        if handle is not None:
            handle._deliver(msg)
        if self.listener is not None:
            try:
                self.listener(msg)
            except Exception:
                log.exception("client listener failed")

    def _on_worker_exit(self, generation: int, exitcode: int | None) -> None:
        with self._lock:
            if generation != self._generation:
                return
            if self._closed or not self._hello.is_set():
                return  # shut down on purpose, or died while starting (start() reports that)
            t_dead = time.monotonic()
            log.warning("engine worker exited (code %s)", exitcode)
            running = [h for h in self._handles.values() if h.started]
            for h in running:
                del self._handles[h.id]
            now = time.monotonic()
            self._crash_times.append(now)
            while self._crash_times and now - self._crash_times[0] > self.restart_window_s:
                self._crash_times.popleft()
            give_up = len(self._crash_times) > self.max_restarts or self._startup_error is not None
        why = f"the engine stopped while working on this (exit code {exitcode})"
        restart_error: NexusError | None = None
        if not give_up:
            # restart before reporting the crash, so a retry sent from an error callback finds the new worker
            # instead of starting a second one
            try:
                with self._lock:
                    if not self.alive:
                        self.restarts += 1
                        self._spawn()
                self._wait_hello(60.0)
                self.last_recovery_ms = (time.monotonic() - t_dead) * 1000
            except NexusError as e:
                give_up, restart_error = True, e
        for h in running:
            h._deliver(Error(id=h.id, code=WorkerCrashedError.code, message=why,
                             hint="it was restarted; send the request again"))
        if give_up:
            if self._startup_error is not None:
                err = WorkerCrashedError(self._startup_error.message, self._startup_error.hint)
            elif restart_error is not None:
                err = restart_error
            else:
                err = WorkerCrashedError(f"the engine crashed {len(self._crash_times)} times in "
                                         f"{self.restart_window_s:.0f} s",
                                         "run `nexus doctor`; the worker log is in the data dir")
            self._fail_all(err)
            return
        with self._lock:
            # sent to a dead worker and never started (replaying cannot repeat work); requests that went to the
            # new worker while it started are already there and must not run twice
            replay = [h for h in self._handles.values()
                      if not h.started and h.sent_on is not None and h.sent_on < self._generation]
        for h in replay:
            self._send(h.request, h)

    def _fail_all(self, err: NexusError) -> None:
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        for h in handles:
            h._deliver(Error.of(h.id, err))

    # ------------------------------------------------------------------------------- sending
    def _send(self, msg: Message, handle: RequestHandle | None = None) -> None:
        data = msg.encode()
        with self._send_lock:
            conn = self._conn
            if conn is None:
                raise WorkerCrashedError("the engine is not running")
            if handle is not None:
                handle.sent_on = self._generation
            try:
                conn.send_bytes(data)
            except (OSError, ValueError) as e:
                # the reader will notice the death and replay this request if it was registered
                log.info("send failed, worker is gone: %s", e)

    def submit(self, request: Message, on_event: Listener | None = None) -> RequestHandle:
        if self._closed:
            raise WorkerCrashedError("the engine client is closed")
        if not self.alive and not self._handles:
            self.start()  # after a crash loop gave up, a new request tries once more
        handle = RequestHandle(self, request, on_event)
        with self._lock:
            self._handles[request.id] = handle
        self._send(request, handle)
        return handle

    def chat(self, messages: list[dict[str, str]], on_event: Listener | None = None,
             **params: Any) -> RequestHandle:
        return self.submit(ChatRequest(messages=messages, **params), on_event)

    def cancel(self, request_id: str) -> None:
        try:
            self._send(Cancel(target=request_id))
        except NexusError:
            pass

    def _roundtrip(self, msg: Message, timeout: float) -> Message:
        handle = RequestHandle(self, msg, None)
        with self._lock:
            self._handles[msg.id] = handle
        try:
            self._send(msg, handle)
            return handle._events.get(timeout=timeout)
        except queue.Empty as e:
            raise TimeoutError(f"the engine did not answer {msg.type_name} within {timeout} s") from e
        finally:
            with self._lock:
                self._handles.pop(msg.id, None)

    def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time to the worker in milliseconds."""
        t0 = time.perf_counter()
        self._roundtrip(Ping(), timeout)
        return (time.perf_counter() - t0) * 1000

    def status(self, timeout: float = 5.0) -> Status:
        reply = self._roundtrip(StatusRequest(), timeout)
        if not isinstance(reply, Status):
            raise WorkerCrashedError(f"unexpected reply to status: {reply.type_name}")
        return reply
