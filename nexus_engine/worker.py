"""The engine worker process: reads requests from its pipe, runs them, streams events back.

Threads: the main thread only reads the pipe, so CONTROL messages (cancel, ping, status, shutdown) are
answered at once even while a model is generating; DATA requests go to a queue that one job thread works
through in order. The process is started with `spawn` (forking a process that has torch threads deadlocks).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nexus_engine import generation, safety
from nexus_engine.config import load_models_toml
from nexus_engine.engine import Engine
from nexus_engine.errors import ConfigError, NexusError, ProtocolError
from nexus_engine.protocol import (
    CONTROL,
    Cancel,
    ChatRequest,
    DescribeRequest,
    Done,
    Error,
    GenerateRequest,
    Hello,
    LoadTower,
    Message,
    Ping,
    Pong,
    SearchRequest,
    Shutdown,
    Started,
    Status,
    StatusRequest,
    TranscribeRequest,
    UnloadTower,
    decode,
)
from nexus_engine.vision import service as vision_service
from nexus_engine.voice import service as voice_service

log = logging.getLogger("nexus.worker")


class Worker:
    def __init__(self, conn: Connection, engine: Engine) -> None:
        self.conn = conn
        self.engine = engine
        self._send_lock = threading.Lock()
        self._jobs: queue.Queue[Message | None] = queue.Queue()
        self._cancels: dict[str, threading.Event] = {}
        self._queued: set[str] = set()  # ids waiting in the queue; guarded by _state_lock
        self._state_lock = threading.Lock()
        self._running: str | None = None
        self.voice = voice_service.VoiceService(engine, self.send)  # calls run on their own threads
        self._handlers: dict[type[Message], Callable[[Any, threading.Event], dict[str, Any]]] = {
            ChatRequest: lambda m, c: self.engine.chat(m, self.send, c),
            GenerateRequest: lambda m, c: generation.generate(self.engine, m, self.send, c),
            DescribeRequest: lambda m, c: vision_service.describe(self.engine, m, self.send, c),
            SearchRequest: lambda m, c: vision_service.search(self.engine, m, self.send, c),
            TranscribeRequest: lambda m, c: voice_service.transcribe(self.engine, m, self.send, c),
            LoadTower: self._load,
            UnloadTower: self._unload,
        }

    def send(self, msg: Message) -> None:
        data = msg.encode()
        with self._send_lock:
            try:
                self.conn.send_bytes(data)
            except (OSError, ValueError):  # the client is gone; the reader will see EOF and exit
                pass

    # ----------------------------------------------------------------------------------- loop
    def run(self) -> None:
        self.send(Hello(pid=os.getpid(), profile=self.engine.profile))
        jobs = threading.Thread(target=self._work, name="nexus-jobs", daemon=True)
        jobs.start()
        while True:
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                log.info("client closed the pipe; exiting")
                break
            try:
                msg = decode(data)
            except ProtocolError as e:
                log.warning("bad message: %s", e)
                self.send(Error.of("", e))
                continue
            if msg.tier == CONTROL:
                if self._control(msg):
                    break
            else:
                with self._state_lock:
                    self._cancels[msg.id] = threading.Event()
                    self._queued.add(msg.id)
                self._jobs.put(msg)
        self.voice.close()
        for ev in list(self._cancels.values()):
            ev.set()
        self._jobs.put(None)
        jobs.join(timeout=5)

    def _control(self, msg: Message) -> bool:
        """Handle a control message in the reader thread; True means shut down."""
        if isinstance(msg, Ping):
            self.send(Pong(id=msg.id))
        elif isinstance(msg, Cancel):
            with self._state_lock:
                was_queued = msg.target in self._queued
                self._queued.discard(msg.target)
                ev = self._cancels.get(msg.target)
                if ev is not None:
                    ev.set()
            if was_queued:  # answer now; the job thread will drop it when it comes up
                self.send(Done(id=msg.target, stats={"finish": "cancelled", "started": False}))
        elif isinstance(msg, StatusRequest):
            self.send(Status(id=msg.id, busy=self._running, queued=len(self._queued), towers=self.engine.status(),
                             residency=self.engine.residency_snapshot()))
        elif isinstance(msg, voice_service.VOICE_MESSAGES):
            self.voice.handle(msg)
        elif isinstance(msg, Shutdown):
            return True
        return False

    def _work(self) -> None:
        while True:
            msg = self._jobs.get()
            if msg is None:
                return
            with self._state_lock:
                if msg.id not in self._queued:  # cancelled while queued: already answered
                    self._cancels.pop(msg.id, None)
                    continue
                self._queued.discard(msg.id)
                cancel = self._cancels.setdefault(msg.id, threading.Event())
                self._running = msg.id
            try:
                self.send(Started(id=msg.id))
                handler = self._handlers.get(type(msg))
                if handler is None:
                    raise ProtocolError(f"the worker cannot handle {msg.type_name!r} requests")
                self.send(Done(id=msg.id, stats=handler(msg, cancel)))
            except NexusError as e:
                self.send(Error.of(msg.id, e))
            except MemoryError:
                self.send(Error(id=msg.id, code="out_of_memory", message="the engine ran out of memory",
                                hint="close other programs or lower the memory budget in settings"))
            except Exception as e:  # a bug: report it as a typed error, keep serving
                log.error("request %s failed:\n%s", msg.id, traceback.format_exc())
                self.send(Error(id=msg.id, code="internal_error", message=f"{type(e).__name__}: {e}",
                                hint=f"this is a bug in Nexus; details are in {log_path()}"))
            finally:
                self._running = None
                self._cancels.pop(msg.id, None)

    def _load(self, msg: LoadTower, cancel: threading.Event) -> dict[str, Any]:
        _, info = self.engine.ensure_loaded(self.engine.tower_name(msg.tower, ""), self.send, msg.id)
        return info

    def _unload(self, msg: UnloadTower, cancel: threading.Event) -> dict[str, Any]:
        self.engine.unload(self.engine.tower_name(msg.tower, ""), self.send, msg.id)
        return {}


def log_path() -> Path:
    from nexus_engine import paths

    return paths.data_dir() / "logs" / "worker.log"


def worker_main(conn: Connection, config_files: list[str], profile: str | None) -> None:
    """Entry point of the spawned process."""
    # Ctrl-C in a terminal signals the whole process group; the client decides what a Ctrl-C cancels
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    safety.apply_offline()  # no hub or telemetry calls unless NEXUS_ALLOW_HUB=1 (EngineClient sets these too)
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=path, level=logging.INFO,
                        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s")
    try:
        config = load_models_toml([Path(f) for f in config_files])
        engine = Engine(config, profile)
    except ConfigError as e:
        # say why before exiting, so the client reports the config error instead of a crash loop
        conn.send_bytes(Error.of("", e).encode())
        conn.close()
        return
    Worker(conn, engine).run()


if __name__ == "__main__":
    import json
    import sys

    spec = json.loads(sys.argv[1])
    worker_main(Connection(spec["fd"]), spec["config_files"], spec["profile"])
