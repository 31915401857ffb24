"""The one owner of every byte the engine's towers hold: VRAM on "cuda:0" and RAM on "cpu".

Each device has a capacity and a reserve (on the GPU the CUDA context and activations, in RAM the OS and the
app); towers may hold limit = capacity - reserve. Bytes move in two steps, ComfyUI-style but without globals:
reserve() before a load, so two loads cannot both pass the check, then commit() with the size measured after
it; release() gives them back, resize() changes a holder's bytes in place (a tower going warm grows its RAM).
Nothing goes above the limit: a call that would raises BudgetError with the numbers and changes nothing.
With a probe (free-memory queries of the machine) a reservation must also fit in what is physically free,
so memory that other processes hold on the GPU is respected.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nexus_engine.config.units import fmt_bytes, parse_bytes
from nexus_engine.errors import BudgetError
from nexus_engine.residency.policy import CPU, GPU, Limits

log = logging.getLogger("nexus.residency")

GiB = 1024**3
MiB = 1024**2
CUDA_CONTEXT = 512 * MiB  # what the CUDA context and cuBLAS workspaces take before any tensor
PAGE_LOCKED_SHARE = 0.5  # at most half the RAM budget pinned: page-locked memory cannot be swapped or reclaimed
Probe = Callable[[str], int | None]  # device -> bytes physically free now (None: unknown)


def default_reserve(device: str, capacity: int) -> tuple[int, int]:
    """(reserve, headroom) for a device of `capacity` bytes; headroom is the part kept free at load time."""
    if capacity <= 0:
        return 0, 0
    if device == CPU:  # OS, desktop, the app and Python itself: 20 %, between 2 and 8 GiB
        return min(capacity, min(max(int(capacity * 0.20), 2 * GiB), 8 * GiB)), 512 * MiB
    activations = max(1 * GiB, int(capacity * 0.06))  # KV caches, attention and VAE scratch of the running tower
    return min(capacity, CUDA_CONTEXT + activations), activations


@dataclass
class DeviceBudget:
    name: str
    capacity: int
    reserve: int = 0
    headroom: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)

    @property
    def limit(self) -> int:
        return max(0, self.capacity - self.reserve)

    @property
    def used(self) -> int:
        return sum(self.committed.values()) + sum(self.pending.values())


class Budget:
    def __init__(self, devices: Iterable[DeviceBudget], probe: Probe | None = None) -> None:
        self.devices = {d.name: d for d in devices}
        self.probe = probe
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ constructors
    @classmethod
    def fixed(cls, vram: int, ram: int, vram_reserve: int | None = None, ram_reserve: int | None = None) -> Budget:
        """Given capacities and no probing: `nexus plan` and tests."""
        return cls([_device(GPU, vram, vram_reserve), _device(CPU, ram, ram_reserve)])

    @classmethod
    def for_machine(cls, vram: int | None = None, ram: int | None = None) -> Budget:
        """Capacities of this machine (or the given ones), probing free memory before each reservation."""
        cuda = cuda_memory()
        vram = vram if vram is not None else (cuda[1] if cuda else 0)
        ram = ram if ram is not None else _psutil().virtual_memory().total
        return cls([_device(GPU, vram), _device(CPU, ram)], probe=machine_free)

    # ---------------------------------------------------------------------------------------- queries
    def _dev(self, device: str) -> DeviceBudget:
        if device not in self.devices:
            raise BudgetError(f"no budget for device {device!r}", f"devices: {', '.join(self.devices)}")
        return self.devices[device]

    def limit(self, device: str) -> int:
        return self._dev(device).limit

    def used(self, device: str) -> int:
        with self._lock:
            return self._dev(device).used

    def available(self, device: str) -> int:
        """Bytes a new reservation may take now (limit and, with a probe, physical free memory)."""
        free = self.probe(device) if self.probe else None
        with self._lock:
            return self._room(self._dev(device), free)

    def limits(self) -> Limits:
        """What the policy may plan with: held bytes plus what is still available, per device."""
        held = {name: self.used(name) for name in self.devices}
        vram = held.get(GPU, 0) + self.available(GPU) if GPU in self.devices else 0
        ram = held.get(CPU, 0) + self.available(CPU) if CPU in self.devices else 0
        return Limits(vram=vram, ram=ram, page_locked=int(ram * PAGE_LOCKED_SHARE))

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe view for the tower monitor and `nexus status`."""
        with self._lock:
            return {name: {"capacity": d.capacity, "reserve": d.reserve, "limit": d.limit, "used": d.used,
                           "free": d.limit - d.used, "committed": dict(d.committed), "pending": dict(d.pending)}
                    for name, d in self.devices.items()}

    # ---------------------------------------------------------------------------------------- changes
    def reserve(self, owner: str, device: str, nbytes: int) -> None:
        """Claim bytes before a load; raises BudgetError (changing nothing) if they do not fit."""
        free = self.probe(device) if self.probe else None  # outside the lock: a probe may be slow
        with self._lock:
            d = self._dev(device)
            self._check(d, owner, nbytes, "reserve", self._room(d, free))
            d.pending[owner] = d.pending.get(owner, 0) + nbytes

    def commit(self, owner: str, device: str, nbytes: int | None = None) -> None:
        """Turn the owner's reservation into held bytes, with the measured size if given."""
        with self._lock:
            d = self._dev(device)
            pending = d.pending.get(owner, 0)
            size = pending if nbytes is None else nbytes
            self._check(d, owner, size - pending, "commit", d.limit - d.used)
            d.pending.pop(owner, None)
            d.committed[owner] = d.committed.get(owner, 0) + size

    def resize(self, owner: str, device: str, nbytes: int) -> None:
        """Set the owner's held bytes on a device (0 drops it), checking only growth."""
        free = self.probe(device) if self.probe else None
        with self._lock:
            d = self._dev(device)
            grow = nbytes - d.committed.get(owner, 0)
            if grow > 0:
                self._check(d, owner, grow, "grow", self._room(d, free))
            if nbytes > 0:
                d.committed[owner] = nbytes
            else:
                d.committed.pop(owner, None)

    def release(self, owner: str, device: str | None = None) -> int:
        """Give back everything the owner holds or reserved (on one device or all); returns the bytes."""
        with self._lock:
            freed = 0
            for d in [self._dev(device)] if device else list(self.devices.values()):
                freed += d.committed.pop(owner, 0) + d.pending.pop(owner, 0)
            return freed

    # --------------------------------------------------------------------------------------- internals
    @staticmethod
    def _room(d: DeviceBudget, free: int | None) -> int:
        room = d.limit - d.used
        if free is not None:  # pending bytes are promised but not yet allocated, so not yet missing from `free`
            room = min(room, free - d.headroom - sum(d.pending.values()))
        return max(0, room)

    @staticmethod
    def _check(d: DeviceBudget, owner: str, nbytes: int, verb: str, room: int) -> None:
        if nbytes < 0 and verb != "commit":
            raise BudgetError(f"cannot {verb} a negative size ({nbytes} bytes) for {owner}")
        if nbytes <= room:
            return
        held = sorted(d.committed.items(), key=lambda kv: -kv[1])[:4]
        who = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in held) or "nothing"
        external = d.limit - d.used - room
        note = f", {fmt_bytes(external)} more taken outside this budget" if external > 0 else ""
        raise BudgetError(
            f"cannot {verb} {fmt_bytes(nbytes)} of {d.name} for {owner}: {fmt_bytes(d.used)} of "
            f"{fmt_bytes(d.limit)} held ({who}){note}; {fmt_bytes(room)} available",
            "unload a tower, choose a smaller quantization, or set device = \"offload\" in models.toml "
            "(`nexus plan` shows what fits)")


def _device(name: str, capacity: int, reserve: int | None = None) -> DeviceBudget:
    r, headroom = default_reserve(name, capacity)
    if reserve is not None:
        r, headroom = min(capacity, reserve), min(headroom, reserve)
    return DeviceBudget(name, capacity, r, headroom)


# ------------------------------------------------------------------------------------------ machine
def _psutil() -> Any:
    import psutil

    return psutil


def cuda_memory() -> tuple[int, int] | None:
    """(free, total) bytes of cuda:0, or None without torch or CUDA. Imports torch only when installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return int(free), int(total)


def machine_free(device: str) -> int | None:
    """Bytes physically free now: what other processes hold is already missing from it."""
    if device == CPU:
        return int(_psutil().virtual_memory().available)
    info = cuda_memory()
    return info[0] if info else None


def machine_budget() -> Budget:
    """This machine's budget; NEXUS_VRAM_BUDGET / NEXUS_RAM_BUDGET (set by the app's settings) cap the capacities.
    Without an NVIDIA driver the GPU line is empty and torch is not imported for it (a CPU worker starts fast)."""
    vram, ram = _env_bytes("NEXUS_VRAM_BUDGET"), _env_bytes("NEXUS_RAM_BUDGET")
    if "torch" in sys.modules or os.path.exists("/proc/driver/nvidia/version") or sys.platform == "win32":
        return Budget.for_machine(vram=vram, ram=ram)
    import psutil

    budget = Budget.fixed(vram=0, ram=ram if ram is not None else psutil.virtual_memory().total)
    budget.probe = lambda device: machine_free(device) if device == CPU else None
    return budget


def _env_bytes(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return parse_bytes(value)
    except ValueError as e:
        log.warning("ignoring %s: %s", name, e)
        return None
