"""The Tower interface every model kind implements, and the chat-specific extension.

A tower is built from its TowerSpec, loads lazily, reports the bytes it really occupies after load, and
streams results. The residency manager owns *when* towers load; a tower only knows *how*.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from nexus_engine.config.schema import TowerSpec


@dataclass
class Footprint:
    """Measured (or, before the first load, estimated) bytes a loaded tower occupies."""

    ram: int = 0
    vram: int = 0
    measured: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"ram": self.ram, "vram": self.vram, "measured": self.measured}


@dataclass
class LoadInfo:
    """What the last load did: how long it took and where the weights came from (file, cache, …)."""

    ms: float = 0.0
    origin: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Tower(Protocol):
    spec: TowerSpec

    @property
    def loaded(self) -> bool: ...

    def load(self) -> LoadInfo: ...

    def unload(self) -> None: ...

    def footprint(self) -> Footprint: ...

    def warmup(self) -> None: ...


@dataclass
class GenParams:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    repeat_penalty: float = 1.0  # >1 discourages tokens seen in the last REPEAT_WINDOW tokens
    seed: int | None = None


REPEAT_WINDOW = 64
SAMPLING_DEFAULTS = {"temperature": 0.7, "top_p": 0.95, "repeat_penalty": 1.0}


@runtime_checkable
class ChatTower(Tower, Protocol):
    """A tower that continues a conversation, one text piece per generated token."""

    @property
    def context_length(self) -> int: ...

    def count_tokens(self, messages: list[dict[str, str]]) -> int: ...

    def stream(self, messages: list[dict[str, str]], params: GenParams,
               cancel: threading.Event) -> Iterator[str]: ...


class Stopwatch:
    """`with Stopwatch() as sw: …; sw.ms` — the one way towers time their loads."""

    def __enter__(self) -> Stopwatch:
        self.t0 = time.perf_counter()
        self.ms = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms = (time.perf_counter() - self.t0) * 1000.0
