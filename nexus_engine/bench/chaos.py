"""`nexus bench chaos`: a mixed stream of requests while the engine worker is SIGKILLed at random moments.

The stream (through the real EngineClient and worker, starter pack on the CPU): chat and routed chat (through
ChatSession, so the SQLite history is being written when the kills land), describe an image, imagine with a tiny
random SD3 pipeline (testing.tiny_sd3_dir, declared as a tower in this run's models.toml), transcribe a WAV.
Up to `inflight` requests are outstanding at a time. A killer thread SIGKILLs the worker `kills` times, each time
after a random gap once the previous restart is done, so kills land mid-load, mid-answer, mid-step and when idle.

Every request must end: completed (Done, or a chat turn stored as done), failed with a clear error (a typed
error other than internal_error, with a message: worker_crashed for requests that had started, which the client
never replays), or it is lost (no end within `timeout_s`; goal 0). Recovery time is from the kill to the new
worker's Hello (goal p95 <= 2 s). After every kill the history file gets `PRAGMA integrity_check` from a separate
connection while the client keeps writing.
"""

from __future__ import annotations

import os
import platform
import random
import signal
import sqlite3
import statistics
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from nexus_engine import paths
from nexus_engine.chat_session import ChatSession, Turn
from nexus_engine.client import EngineClient, RequestHandle
from nexus_engine.errors import NexusError
from nexus_engine.history import History
from nexus_engine.protocol import DescribeRequest, Error, GenerateRequest, Hello, Message, TranscribeRequest

KINDS = ("chat", "route", "describe", "imagine", "transcribe")
CLEAR_CODES = {"worker_crashed", "bad_input", "model_missing", "out_of_budget", "prompt_too_long", "cancelled",
               "unsafe_weights", "config_error", "protocol_error", "out_of_memory"}
PROMPTS = ("Name three primary colors.", "What is the capital of France?", "Write a haiku about rain.",
           "Give me a tip for sleeping better.", "Explain what a CPU does in one sentence.")
TINY_TOWER = "chaos-tiny-sd3"


@dataclass
class Tracked:
    kind: str
    t0: float
    handle: RequestHandle | None = None
    turn: Turn | None = None
    error: NexusError | None = None  # the submit itself failed
    t_end: float | None = None

    def finished(self) -> bool:
        if self.error is not None:
            return True
        if self.turn is not None:
            return self.turn.done
        return self.handle is not None and self.handle.done

    def outcome(self) -> tuple[str, str, str]:
        """(completed | failed_clear | failed_unclear | lost, code, message)."""
        if not self.finished():
            return "lost", "", "no end within the timeout"
        if self.error is not None:
            return _classify(self.error.code, self.error.message)
        if self.turn is not None:
            if self.turn.status in ("done", "cancelled"):
                return "completed", "", ""
            code = str(self.turn.stats.get("code", ""))
            return _classify(code, self.turn.error or "")
        assert self.handle is not None
        result = self.handle.result
        if isinstance(result, Error):
            return _classify(result.code, result.message)
        return "completed", "", ""


def _classify(code: str, message: str) -> tuple[str, str, str]:
    clear = code in CLEAR_CODES and bool(message.strip())
    return ("failed_clear" if clear else "failed_unclear"), code, message[:200]


# ------------------------------------------------------------------------------------------------ inputs
def prepare(home: Path) -> dict[str, Path]:
    """This run's NEXUS_HOME: a models.toml override (one thread per model, the tiny pipeline as the imagination
    tower), an image with text in it and a short WAV."""
    from PIL import Image, ImageDraw

    from nexus_engine.testing import tiny_sd3_dir

    (home / "config").mkdir(parents=True, exist_ok=True)
    inputs = home / "inputs"
    inputs.mkdir(exist_ok=True)
    pipe = home / "models" / "tiny-sd3"
    if not (pipe / "model_index.json").exists():
        tiny_sd3_dir(pipe)
    image = inputs / "sign.png"
    im = Image.new("RGB", (320, 200), "white")
    draw = ImageDraw.Draw(im)
    draw.rectangle((20, 20, 300, 180), outline="black", width=4)
    draw.text((60, 90), "OPEN 24 HOURS", fill="black")
    im.save(image)
    audio = inputs / "tone.wav"
    _write_wav(audio)
    (home / "config" / "models.toml").write_text(
        "[towers.smollm2-chat.options]\nn_threads = 1\n"
        "[towers.efficientnet-lite0.options]\nn_threads = 1\n"
        "[towers.rapidocr.options]\nn_threads = 1\n"
        f"[towers.{TINY_TOWER}]\nkind = \"image_gen\"\nbackend = \"diffusers\"\ncapabilities = [\"imagination\"]\n"
        f"source = {{ path = \"{pipe}\" }}\nquantization = \"fp32\"\ndtype = \"fp32\"\ndevice = \"cpu\"\n"
        "latency = \"background\"\n"
        f"[profiles.starter.roles]\nimagination = \"{TINY_TOWER}\"\n")
    return {"image": image, "audio": audio, "models_toml": home / "config" / "models.toml"}


def _write_wav(path: Path, seconds: float = 2.0, rate: int = 16000) -> None:
    """A rising tone with a little noise: real audio to decode and transcribe, without a shipped speech clip."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 + 150 * t) * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


# --------------------------------------------------------------------------------------------------- run
def run(requests: int = 60, kills: int = 10, inflight: int = 3, seed: int = 0, gap_s: tuple[float, float] = (1.0, 6.0),
        timeout_s: float = 300.0, home: Path | None = None, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="nexus-chaos-") as tmp:
        root = Path(home) if home is not None else Path(tmp)
        inputs = prepare(root)
        db = root / "data" / "history.sqlite3"
        db.parent.mkdir(parents=True, exist_ok=True)
        hellos: list[tuple[float, int]] = []
        lock = threading.Lock()

        def listen(msg: Message) -> None:
            if isinstance(msg, Hello):
                with lock:
                    hellos.append((time.monotonic(), msg.pid))

        client = EngineClient(config_files=[paths.SHIPPED_MODELS_TOML, inputs["models_toml"]],
                              env={"NEXUS_HOME": str(root)}, listener=listen, max_restarts=kills + 5)
        history = History(db)
        before = _worker_pids()
        client.start(timeout=120)
        killer = Killer(client, db, hellos, lock, kills, gap_s, rng)
        t0 = time.monotonic()
        try:
            tracked = _stream(client, history, inputs, requests, inflight, kinds, rng, killer, timeout_s)
        finally:
            killer.stop.set()
            killer.thread.join(60)
            client.close()
            history.close()
        # only workers started during this run: a host process (a test session, the app) may hold its own
        leaked = sorted(_worker_pids() - before)
        with History(db) as h:
            final_check = h.integrity_check()
    return _figures(tracked, killer, time.monotonic() - t0, final_check, leaked, {
        "requests_asked": requests, "kills_asked": kills, "inflight": inflight, "seed": seed, "gap_s": list(gap_s),
        "timeout_s": timeout_s, "kinds": list(kinds)})


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _stream(client: EngineClient, history: History, inputs: dict[str, Path], requests: int, inflight: int,
            kinds: tuple[str, ...], rng: random.Random, killer: Killer, timeout_s: float) -> list[Tracked]:
    """Keep `inflight` requests going until `requests` were sent and the killer is done; then wait for the rest."""
    submit: dict[str, Callable[[], Tracked]] = {
        "chat": lambda: _chat(client, history, rng, "reasoning"),
        "route": lambda: _chat(client, history, rng, "auto"),
        "describe": lambda: _submit(client, "describe", DescribeRequest(path=str(inputs["image"]), index=False,
                                                                         max_tokens=32)),
        "imagine": lambda: _submit(client, "imagine", GenerateRequest(prompt="a red cube on a table", width=32,
                                                                      height=32, steps=2, tower=TINY_TOWER)),
        "transcribe": lambda: _submit(client, "transcribe", TranscribeRequest(path=str(inputs["audio"]))),
    }
    tracked: list[Tracked] = []
    active: list[Tracked] = []
    order: list[str] = []  # kinds in shuffled rounds: every kind is in every len(kinds) requests
    killer.thread.start()
    while len(tracked) < requests or killer.thread.is_alive():
        for t in [t for t in active if t.finished()]:
            t.t_end = time.monotonic()
            active.remove(t)
        if len(active) < inflight:
            if not order:
                order = rng.sample(kinds, len(kinds))
            t = submit[order.pop()]()
            tracked.append(t)
            active.append(t)
        killer.active = [t.kind for t in active]
        time.sleep(0.05)
    deadline = time.monotonic() + timeout_s
    while active and time.monotonic() < deadline:
        for t in [t for t in active if t.finished()]:
            t.t_end = time.monotonic()
            active.remove(t)
        time.sleep(0.05)
    return tracked


def _chat(client: EngineClient, history: History, rng: random.Random, role: str) -> Tracked:
    t = Tracked("chat" if role != "auto" else "route", time.monotonic())
    try:
        session = ChatSession(client, history)
        t.turn = session.send(rng.choice(PROMPTS), max_tokens=24 if role != "auto" else 12, role=role, seed=1)
    except NexusError as e:
        t.error = e
    return t


def _submit(client: EngineClient, kind: str, request: Message) -> Tracked:
    t = Tracked(kind, time.monotonic())
    try:
        t.handle = client.submit(request)
    except NexusError as e:
        t.error = e
    return t


# ------------------------------------------------------------------------------------------------ killer
@dataclass
class Kill:
    t: float
    pid: int
    during: list[str]
    recovery_ms: float | None = None
    integrity: str = ""


@dataclass
class Killer:
    client: EngineClient
    db: Path
    hellos: list[tuple[float, int]]
    lock: threading.Lock
    kills: int
    gap_s: tuple[float, float]
    rng: random.Random
    done: list[Kill] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)

    def _run(self) -> None:
        while len(self.done) < self.kills and not self.stop.wait(self.rng.uniform(*self.gap_s)):
            pid = self.client.worker_pid
            if pid is None or not self.client.alive:
                continue
            kill = Kill(time.monotonic(), pid, list(self.active))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kill.integrity = _integrity(self.db)  # while the client may be writing the answer it was streaming
            deadline = kill.t + 60
            while time.monotonic() < deadline and kill.recovery_ms is None:
                with self.lock:
                    hello = next((t for t, p in self.hellos if t > kill.t and p != pid), None)
                if hello is not None:
                    kill.recovery_ms = (hello - kill.t) * 1000
                time.sleep(0.01)
            self.done.append(kill)


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ figures
def _worker_pids() -> set[int]:
    """This process's engine worker descendants."""
    return {p.pid for p in psutil.Process().children(recursive=True) if "nexus_engine.worker" in " ".join(_cmdline(p))}


def _figures(tracked: list[Tracked], killer: Killer, seconds: float, final_check: str, leaked: list[int],
             asked: dict[str, Any]) -> dict[str, Any]:
    outcomes = [(t, *t.outcome()) for t in tracked]
    counts = Counter(o for _, o, _, _ in outcomes)
    by_kind: dict[str, Counter[str]] = {}
    for t, o, _, _ in outcomes:
        by_kind.setdefault(t.kind, Counter())[o] += 1
    codes = Counter(code for _, o, code, _ in outcomes if o.startswith("failed"))
    unclear = [f"{t.kind}: {code} {msg}" for t, o, code, msg in outcomes if o == "failed_unclear"]
    rec = sorted(k.recovery_ms for k in killer.done if k.recovery_ms is not None)
    checks = [k.integrity for k in killer.done]
    return {
        "bench": "chaos", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.machine(),
        "cpus": os.cpu_count(), **asked, "seconds": round(seconds, 1),
        "requests": len(tracked), "completed": counts["completed"], "failed_clear": counts["failed_clear"],
        "failed_unclear": counts["failed_unclear"], "lost": counts["lost"],
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}, "error_codes": dict(codes),
        "unclear_examples": unclear[:5],
        "kills": len(killer.done), "not_recovered": sum(k.recovery_ms is None for k in killer.done),
        "recovery_ms": {"p50": round(statistics.median(rec), 1) if rec else None,
                        "p95": round(_pct(rec, 95), 1) if rec else None, "max": round(rec[-1], 1) if rec else None,
                        "all": [round(r, 1) for r in rec]},
        "kill_during": [k.during for k in killer.done],
        "integrity_after_each_kill": checks, "integrity_all_ok": all(c == "ok" for c in checks),
        "integrity_final": final_check, "leaked_workers": leaked,
        "goals": {"lost == 0": counts["lost"] == 0, "unclear failures == 0": counts["failed_unclear"] == 0,
                  "recovery p95 <= 2 s": bool(rec) and _pct(rec, 95) <= 2000 and len(rec) == len(killer.done),
                  "integrity ok after every kill": all(c == "ok" for c in checks) and final_check == "ok",
                  "no leaked workers": not leaked},
    }


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]
