"""What the residency manager hands out and keeps per tower: the Lease a job holds, each tower's slot, and one
acquire's memory between its steps (manager.py drives them)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nexus_engine.config.schema import TowerSpec
from nexus_engine.residency.policy import CPU
from nexus_engine.towers.base import Tower

if TYPE_CHECKING:
    from nexus_engine.residency.manager import ResidencyManager


class Lease:
    """Towers held for one run: `with manager.acquire([...]) as lease:`. Never evicted while held."""

    def __init__(self, manager: ResidencyManager, towers: tuple[str, ...], latency: str) -> None:
        self.towers = towers
        self.latency = latency
        self.info: dict[str, dict[str, Any]] = {}  # per tower: load_ms, origin (resident, warm, a path…)
        self._manager = manager
        self._yield = threading.Event()
        self._released = False

    def tower(self, name: str) -> Tower:
        tower = self._manager._slots[name].tower
        assert tower is not None, name
        return tower

    def should_yield(self) -> bool:
        """True once an interactive request needs this (background) job's memory: stop at the next step."""
        return self._yield.is_set()

    def release(self) -> None:
        self._manager._release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Slot:
    """The manager's record of one tower. Budget invariant: GPU bytes = vram, RAM bytes = ram + kept."""

    spec: TowerSpec
    tower: Tower | None = None
    tier: str = "cold"  # cold | hot | warm
    device: str = CPU  # where it runs when hot (GPU or CPU)
    mode: str = "full"  # full | offload
    vram: int = 0
    ram: int = 0  # hot: the tower's own RAM (a CPU tower, offloaded layers); warm: the warm copy
    kept: int = 0  # hot: the host copy kept from the last swap-in (swap-out re-points, no copy)
    page_locked: bool = False
    warm: Any = None  # WarmModule, once the tower has been warm
    users: int = 0
    last_used: float = 0.0
    pinned: bool = False
    busy: bool = False  # being loaded or evicted right now: not for the fast path
    yielding: bool = False  # an interactive request waits for its background jobs to stop

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Attempt:
    """What one acquire remembers between its steps."""

    preempt_deadline: float
    wait_deadline: float
    deadline: float = 0.0  # until when the current wait may last
    retried: set[str] = field(default_factory=set)  # towers whose load ran out of memory once already
    asked: set[str] = field(default_factory=set)  # towers whose jobs were asked to yield


class Busy(Exception):
    """An eviction target got a user between decision and action: decide again."""
