"""The engine inside the worker: owns the towers and turns requests into streams of events.

Transport-free on purpose: `emit` is a callback, so the same code runs in the worker process, in tests
and in benchmarks. The residency manager (issue 4) takes over `_ensure_loaded` and the towers dict.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from nexus_engine import registry
from nexus_engine.config.schema import ModelsConfig
from nexus_engine.errors import BadInputError, ModelMissingError, PromptTooLongError
from nexus_engine.protocol import ChatRequest, Message, TokenChunk, TowerEvent
from nexus_engine.towers.base import SAMPLING_DEFAULTS, ChatTower, GenParams, Tower
from nexus_engine.towers.chat_format import StopMatcher, check_messages

Emit = Callable[[Message], None]


class Engine:
    def __init__(self, config: ModelsConfig, profile: str | None = None) -> None:
        self.config = config
        self.profile = config.profile(profile).name
        self.towers: dict[str, Tower] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------- towers
    def tower_name(self, tower: str | None, role: str) -> str:
        if tower:
            if tower not in self.config.towers:
                raise ModelMissingError(f"unknown tower {tower!r}",
                                        f"declared towers: {', '.join(sorted(self.config.towers))}")
            return tower
        spec = self.config.tower_for(role, self.profile)
        if spec is None:
            raise ModelMissingError(f"no tower serves the role {role!r} in profile {self.profile!r}",
                                    f"map {role} to a tower in [profiles.{self.profile}.roles] in models.toml")
        return spec.name

    def ensure_loaded(self, name: str, emit: Emit, request_id: str = "") -> tuple[Tower, dict[str, Any]]:
        with self._lock:
            tower = self.towers.get(name)
            if tower is None:
                tower = self.towers[name] = registry.build(self.config.towers[name])
            if tower.loaded:
                return tower, {"load_ms": 0.0, "origin": "resident"}
            info = tower.load()
            fp = tower.footprint()
        emit(TowerEvent(id=request_id, tower=name, action="load", bytes=fp.ram + fp.vram, ms=info.ms,
                        detail=info.origin))
        return tower, {"load_ms": info.ms, "origin": info.origin, **info.details}

    def unload(self, name: str, emit: Emit, request_id: str = "") -> None:
        with self._lock:
            tower = self.towers.get(name)
            if tower is None or not tower.loaded:
                return
            freed = tower.footprint()
            t0 = time.perf_counter()
            tower.unload()
        emit(TowerEvent(id=request_id, tower=name, action="unload", bytes=freed.ram + freed.vram,
                        ms=(time.perf_counter() - t0) * 1000))

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: {"loaded": t.loaded, **t.footprint().to_dict()} for name, t in self.towers.items()}

    # ------------------------------------------------------------------------------------ chat
    def chat(self, req: ChatRequest, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
        check_messages(req.messages)
        if req.max_tokens < 1:
            raise BadInputError(f"max_tokens must be at least 1, got {req.max_tokens}")
        name = self.tower_name(req.tower, req.role)
        tower, load = self.ensure_loaded(name, emit, req.id)
        if not isinstance(tower, ChatTower):
            raise BadInputError(f"tower {name!r} is a {tower.spec.kind} tower and cannot chat")
        messages, dropped, n_prompt = fit_context(tower, req.messages, req.max_tokens)
        params = GenParams(max_tokens=req.max_tokens, seed=req.seed, **sampling(tower, req))
        stops = StopMatcher(req.stop)
        t0 = time.perf_counter()
        t_first: float | None = None
        n = 0
        finish = "length"
        for piece in tower.stream(messages, params, cancel):
            n += 1
            if t_first is None:
                t_first = time.perf_counter()
            text = stops.feed(piece)
            if text:
                emit(TokenChunk(id=req.id, text=text))
            if stops.stopped:
                finish = "stop"
                break
        else:
            finish = "cancelled" if cancel.is_set() else ("length" if n >= req.max_tokens else "eos")
        tail = stops.flush()
        if tail:
            emit(TokenChunk(id=req.id, text=tail))
        t_end = time.perf_counter()
        decode_s = t_end - (t_first or t_end)
        return {
            "tower": name, "finish": finish, "tokens": n, "prompt_tokens": n_prompt,
            "dropped_messages": dropped, "ttft_ms": ((t_first or t_end) - t0) * 1000,
            "decode_tok_s": (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0,
            "total_ms": (t_end - t0) * 1000, "load_ms": load["load_ms"], "load_origin": load["origin"],
        }


def sampling(tower: Tower, req: ChatRequest) -> dict[str, float]:
    """Request value, else the tower's default from models.toml options, else the global default.

    Small models need their own settings (SmolLM2-135M rambles at 0.7 and wants ~0.2 and a repeat penalty),
    the way LM Studio keeps per-model presets.
    """
    out = {}
    for key, default in SAMPLING_DEFAULTS.items():
        value = getattr(req, key)
        out[key] = float(value if value is not None else tower.spec.options.get(key, default))
    return out


def fit_context(tower: ChatTower, messages: list[dict[str, str]],
                max_tokens: int) -> tuple[list[dict[str, str]], int, int]:
    """Drop the oldest turns (never the system prompt or the last message) until the prompt leaves room.

    Returns (messages, how many were dropped, prompt tokens). Room for the reply is max_tokens, but at most a
    quarter of the window, so a long max_tokens does not evict the whole history.
    """
    window = tower.context_length
    room = min(max_tokens, window // 4)
    msgs = list(messages)
    dropped = 0
    n = tower.count_tokens(msgs)
    while n + room > window:
        first = 1 if msgs[0]["role"] == "system" else 0
        if len(msgs) - first <= 1:
            raise PromptTooLongError(
                f"the message is {n} tokens but this model's context window is {window} "
                f"({room} kept free for the reply)",
                "shorten the message, attach long text as a file, or use a tower with a longer context")
        del msgs[first]
        dropped += 1
        n = tower.count_tokens(msgs)
    return msgs, dropped, n
