"""The engine inside the worker: owns the towers and turns requests into streams of events.

Transport-free on purpose: `emit` is a callback, so the same code runs in the worker process, in tests
and in benchmarks. Which towers are loaded is the residency manager's business (residency/manager.py): a run
holds a lease on its tower, so nothing evicts it mid-answer. The manager (and the machine's budget) is made on
first use, so a worker starts without probing memory or importing torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from nexus_engine.config import limits
from nexus_engine.config.schema import ModelsConfig
from nexus_engine.errors import BadInputError, ModelMissingError, PromptTooLongError
from nexus_engine.protocol import ChatRequest, Message, ResidencyEvent, TokenChunk
from nexus_engine.residency.budget import machine_budget
from nexus_engine.residency.footprints import FootprintStore
from nexus_engine.residency.manager import Lease, ResidencyManager
from nexus_engine.routing import Routing
from nexus_engine.towers.base import SAMPLING_DEFAULTS, ChatTower, GenParams, Tower
from nexus_engine.towers.chat_format import StopMatcher, check_messages
from nexus_engine.vision import chat as vision_chat
from nexus_engine.voice import attached

Emit = Callable[[Message], None]


class Engine:
    def __init__(self, config: ModelsConfig, profile: str | None = None,
                 residency: ResidencyManager | None = None) -> None:
        self.config = config
        self.profile = config.profile(profile).name
        limits.activate(config.limits)  # what this process's decoders and checks enforce (config/limits.py)
        self._residency = residency
        self._lock = threading.Lock()
        self.routing = Routing(self)

    @property
    def residency(self) -> ResidencyManager:
        with self._lock:
            if self._residency is None:
                self._residency = ResidencyManager(self.config, machine_budget(), FootprintStore())
            return self._residency

    @property
    def towers(self) -> dict[str, Tower]:
        """Tower objects built so far (loaded or not)."""
        return self._residency.towers() if self._residency else {}

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
        """Make a tower hot now (LoadTower, warm-up); it stays resident until the policy needs its memory."""
        with self.residency.acquire((name,), emit=emit, request_id=request_id) as lease:
            return lease.tower(name), lease.info[name]

    def unload(self, name: str, emit: Emit, request_id: str = "") -> None:
        self.residency.unload(name, emit, request_id)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per tower: loaded, tier (hot/warm/cold), bytes, in use."""
        if self._residency is None:
            return {}
        return self._residency.snapshot()["towers"]

    def residency_snapshot(self) -> dict[str, Any]:
        """The budget and the towers, for the monitor; empty before the first load."""
        return self._residency.snapshot() if self._residency else {}

    # ------------------------------------------------------------------------------------ chat
    def chat(self, req: ChatRequest, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
        check_messages(req.messages)
        check_size(req, self.config.limits)
        req = self.routing.resolve(req, emit)  # role "auto": the router picks (and the app sees why)
        if attached.audio_files(req):  # voice notes, recordings: heard first, then answered (voice/attached.py)
            return attached.answer_with_hearing(self, req, emit, cancel)
        handler = vision_chat.route(self, req)  # attachments, "draw …": vision/chat.py
        if handler is not None:
            return handler(self, req, emit, cancel)
        name = self.tower_name(req.tower, req.role)
        with self.residency.acquire((name,), emit=emit, request_id=req.id) as lease:
            emit(ResidencyEvent(id=req.id, snapshot=self.residency.snapshot()))  # the monitor shows "running"
            try:
                return self._chat(req, emit, cancel, lease)
            finally:
                lease.release()
                emit(ResidencyEvent(id=req.id, snapshot=self.residency.snapshot()))

    def _chat(self, req: ChatRequest, emit: Emit, cancel: threading.Event, lease: Lease) -> dict[str, Any]:
        name = lease.towers[0]
        tower, load = lease.tower(name), lease.info[name]
        if not isinstance(tower, ChatTower):
            raise BadInputError(f"tower {name!r} is a {tower.spec.kind} tower and cannot chat")
        messages, dropped, n_prompt = fit_context(tower, req.messages, req.max_tokens)
        params = GenParams(max_tokens=req.max_tokens, seed=req.seed, **sampling(tower, req))
        stops = StopMatcher(req.stop)
        t0 = time.perf_counter()
        n, t_first, finish = stream_answer(tower.stream(messages, params, cancel), req, stops, emit, cancel,
                                           lease.should_yield)
        t_end = time.perf_counter()
        decode_s = t_end - (t_first or t_end)
        return {
            "tower": name, "finish": finish, "tokens": n, "prompt_tokens": n_prompt,
            "dropped_messages": dropped, "ttft_ms": ((t_first or t_end) - t0) * 1000,
            "decode_tok_s": (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0,
            "total_ms": (t_end - t0) * 1000, "load_ms": load["load_ms"], "load_origin": load["origin"],
        }


def check_size(req: ChatRequest, lim: limits.Limits) -> None:
    """Refuse an oversized request before anything is tokenized or loaded (models.toml [limits])."""
    if req.max_tokens < 1:
        raise BadInputError(f"max_tokens must be at least 1, got {req.max_tokens}")
    if req.max_tokens > lim.max_tokens:
        raise BadInputError(f"max_tokens must be at most {lim.max_tokens}, got {req.max_tokens}",
                            "ask for a shorter answer, or raise max_tokens in [limits] of your models.toml")
    chars = sum(len(m["content"]) for m in req.messages)
    if chars > lim.prompt_chars:
        raise PromptTooLongError(f"the conversation is {chars:,} characters; the limit is {lim.prompt_chars:,}",
                                 "attach long text as a file or start a new chat (prompt_chars in [limits])")


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


def stream_answer(pieces: Iterable[str], req: ChatRequest, stops: StopMatcher, emit: Emit, cancel: threading.Event,
                  should_yield: Callable[[], bool] | None = None) -> tuple[int, float | None, str]:
    """Send a tower's token pieces as TokenChunks through the stop matcher: (pieces, time of the first, finish)."""
    t_first: float | None = None
    n, finish = 0, "length"
    for piece in pieces:
        n += 1
        t_first = t_first or time.perf_counter()
        text = stops.feed(piece)
        if text:
            emit(TokenChunk(id=req.id, text=text))
        if stops.stopped:
            finish = "stop"
            break
        if should_yield is not None and should_yield():  # a background run gives its memory to interactive work
            finish = "preempted"
            break
    else:
        finish = "cancelled" if cancel.is_set() else ("length" if n >= req.max_tokens else "eos")
    tail = stops.flush()
    if tail:
        emit(TokenChunk(id=req.id, text=tail))
    return n, t_first, finish
