"""What the tower monitor shows, worked out from engine messages. Plain Python (no widgets), so it is testable.

Sources, best first:
- ResidencyEvent, or the `residency` snapshot in a (polled) Status reply: the residency manager's budget
  (limits, used bytes per device) and each tower's tier, bytes and users.
- TowerEvent: load / unload / evict / swap_in / swap_out / refuse of one tower, with bytes and milliseconds; it
  updates the tower's row at once, the next snapshot corrects the numbers.
- Status.towers (polled) when no snapshot is available: which towers are loaded and their footprints.
- The requests the app sent (`request_sent`) plus Started/Done: which tower is running now.
- RouteEvent: the router's choice for a request; until the engine sends them, a Done's `stats.tower` gives a
  fallback timeline row that says plainly that no routing decision was received.

States: cold (not in memory), warm (a copy in RAM, ready to swap in), hot (loaded where it runs), running (a
request is using it now).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nexus_engine.config.schema import ModelsConfig
from nexus_engine.protocol import (
    ChatRequest,
    Done,
    Error,
    GenerateRequest,
    Message,
    ResidencyEvent,
    RouteEvent,
    Started,
    Status,
    TowerEvent,
)

COLD, WARM, HOT, RUNNING = "cold", "warm", "hot", "running"
GONE = ("unload", "evict")  # the residency manager's actions (residency/manager.py) that leave a tower cold
TO_WARM = ("swap_out",)
TO_HOT = ("load", "swap_in")
MAX_ROWS = 500  # timeline and event rows kept


@dataclass
class TowerRow:
    name: str
    roles: list[str]
    state: str = COLD
    vram: int = 0
    ram: int = 0
    measured: bool = False
    last_event: str = ""


@dataclass
class RouteRow:
    t: float
    request_id: str
    towers: list[str]
    scores: dict[str, float]
    reason: str
    from_router: bool  # False: a fallback row, built from the answer's stats


@dataclass
class EventRow:
    t: float
    tower: str
    action: str
    bytes: int
    ms: float
    detail: str
    request_id: str


@dataclass
class Budget:
    """Device totals; `source` says where the numbers came from (shown next to the bars)."""

    vram_used: int = 0
    vram_limit: int = 0
    ram_used: int = 0
    ram_limit: int = 0
    source: str = "worker status"


@dataclass
class MonitorModel:
    config: ModelsConfig
    profile: str
    vram_budget: int = 0  # from settings, used until a residency snapshot gives the engine's own limits
    ram_budget: int = 0
    rows: dict[str, TowerRow] = field(default_factory=dict)
    routes: deque[RouteRow] = field(default_factory=lambda: deque(maxlen=MAX_ROWS))
    events: deque[EventRow] = field(default_factory=lambda: deque(maxlen=MAX_ROWS))
    budget: Budget = field(default_factory=Budget)
    _expected: dict[str, list[str]] = field(default_factory=dict)  # request id -> towers it will use
    _running: dict[str, list[str]] = field(default_factory=dict)
    _routed: set[str] = field(default_factory=set)
    _early: dict[str, str] = field(default_factory=dict)  # ids whose Started/Done came before `on_request`
    _snapshot_seen: bool = False

    def __post_init__(self) -> None:
        served: dict[str, list[str]] = {}
        for role, names in self.config.profile(self.profile).roles.items():
            for n in names:
                served.setdefault(n, []).append(role)
        for spec in self.config.profile_towers(self.profile):
            self.rows[spec.name] = TowerRow(spec.name, served.get(spec.name, []))
        self.budget = Budget(vram_limit=self.vram_budget, ram_limit=self.ram_budget)

    def show_all_declared(self) -> None:
        for name in self.config.towers:
            self.rows.setdefault(name, TowerRow(name, []))

    # -------------------------------------------------------------------------------------- inputs
    def on_request(self, req: Message) -> None:
        """A request the app sent: remember the towers it will use (the engine's own rule: the tower named,
        else the profile's primary tower for the role)."""
        if isinstance(req, ChatRequest):
            role, tower = req.role, req.tower
        elif isinstance(req, GenerateRequest):
            role, tower = ("video" if req.kind == "video" else "imagination"), req.tower
        else:
            return
        spec = self.config.towers.get(tower) if tower else self.config.tower_for(role, self.profile)
        if spec is None or req.id in self._expected:  # a RouteEvent already said which towers
            return
        seen = self._early.pop(req.id, None)
        if seen == "done":
            return
        self._expected[req.id] = [spec.name]
        if seen == "started":  # the request was announced after its Started arrived (different threads)
            self._running[req.id] = [spec.name]
            self._refresh_running()

    def on_message(self, msg: Message) -> bool:
        """Update from one engine message; True when something visible changed."""
        if isinstance(msg, TowerEvent):
            return self._on_tower_event(msg)
        if isinstance(msg, ResidencyEvent):
            return self._on_snapshot(msg.snapshot)
        if isinstance(msg, RouteEvent):
            self._routed.add(msg.id)
            self._expected[msg.id] = list(msg.towers)
            self.routes.append(RouteRow(time.time(), msg.id, list(msg.towers), dict(msg.scores), msg.reason, True))
            return True
        if isinstance(msg, Started):
            if msg.id not in self._expected:
                self._remember_early(msg.id, "started")
                return False
            self._running[msg.id] = self._expected[msg.id]
            self._refresh_running()
            return True
        if isinstance(msg, Done | Error) and msg.id in self._early:
            self._remember_early(msg.id, "done")
        if isinstance(msg, Done | Error) and (msg.id in self._expected or msg.id in self._running
                                               or (isinstance(msg, Done) and msg.stats.get("tower"))):
            towers = self._running.pop(msg.id, None) or self._expected.get(msg.id, [])
            self._expected.pop(msg.id, None)
            stats = msg.stats if isinstance(msg, Done) else {}
            if msg.id not in self._routed and isinstance(msg, Done) and stats.get("tower"):
                self.routes.append(RouteRow(
                    time.time(), msg.id, [stats["tower"]], {},
                    "no routing decision from the engine (its router does not send RouteEvents yet): "
                    "the profile's tower for the request's role answered", False))
            self._routed.discard(msg.id)
            for name in towers:
                row = self.rows.get(name)
                if row is not None and row.state == RUNNING:
                    row.state = HOT
            self._refresh_running()
            return True
        return False

    def on_status(self, status: Status) -> bool:
        snapshot = getattr(status, "residency", None)
        if snapshot and self._on_snapshot(snapshot):
            return True
        if self._snapshot_seen:  # the residency snapshot is the better source once it exists
            return False
        for name, info in status.towers.items():
            row = self.rows.setdefault(name, TowerRow(name, []))
            row.vram, row.ram = int(info.get("vram", 0)), int(info.get("ram", 0))
            row.measured = bool(info.get("measured"))
            if not info.get("loaded"):
                row.state = COLD
            elif row.state not in (RUNNING, WARM):
                row.state = HOT
        self._refresh_running()
        self._sum_rows()
        return True

    # ----------------------------------------------------------------------------------- internals
    def _remember_early(self, request_id: str, what: str) -> None:
        self._early[request_id] = what
        while len(self._early) > MAX_ROWS:
            self._early.pop(next(iter(self._early)))

    def _on_tower_event(self, ev: TowerEvent) -> bool:
        self.events.append(EventRow(time.time(), ev.tower, ev.action, ev.bytes, ev.ms, ev.detail, ev.id))
        row = self.rows.setdefault(ev.tower, TowerRow(ev.tower, []))
        row.last_event = f"{ev.action} {ev.ms:.0f} ms"
        if ev.action in GONE:
            row.state, row.ram, row.vram = COLD, 0, 0
        elif ev.action in TO_WARM:
            row.state, row.vram = WARM, 0
            row.ram = row.ram or ev.bytes
        elif ev.action in TO_HOT:
            row.state = HOT
            if not row.ram and not row.vram:
                row.ram = ev.bytes  # which device holds it is known from the next snapshot or status
        self._refresh_running()
        self._sum_rows()
        return True

    def _on_snapshot(self, snap: dict[str, Any]) -> bool:
        devices = parse_devices(snap)
        towers = snap.get("towers") if isinstance(snap.get("towers"), dict) else None
        if not devices and towers is None:
            return False
        self._snapshot_seen = True
        vram = next((d for name, d in devices.items() if name.startswith("cuda")), None)
        ram = devices.get("cpu")
        self.budget = Budget(
            vram_used=_int(vram, "used"), vram_limit=_int(vram, "limit") or self.vram_budget,
            ram_used=_int(ram, "used"), ram_limit=_int(ram, "limit") or self.ram_budget,
            source="residency snapshot")
        if towers is None:  # a bare Budget.snapshot(): holders per device
            towers = {}
            for dev_name, dev in devices.items():
                for owner, nbytes in {**dev.get("committed", {}), **dev.get("pending", {})}.items():
                    t = towers.setdefault(owner, {"tier": HOT, "vram": 0, "ram": 0})
                    t["vram" if dev_name.startswith("cuda") else "ram"] += int(nbytes)
        for row in self.rows.values():
            if row.name not in towers:
                row.state, row.vram, row.ram = COLD, 0, 0
        for name, info in towers.items():
            row = self.rows.setdefault(name, TowerRow(name, []))
            row.vram, row.ram, row.measured = _int(info, "vram"), _int(info, "ram"), True
            tier = str(info.get("tier", HOT))
            row.state = RUNNING if info.get("in_use") else (tier if tier in (COLD, WARM, HOT) else HOT)
        self._refresh_running()
        return True

    def _refresh_running(self) -> None:
        running = {name for towers in self._running.values() for name in towers}
        for name in running:
            if name in self.rows:
                self.rows[name].state = RUNNING

    def _sum_rows(self) -> None:
        if self._snapshot_seen:
            return
        self.budget.vram_used = sum(r.vram for r in self.rows.values())
        self.budget.ram_used = sum(r.ram for r in self.rows.values())


def parse_devices(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Devices from a snapshot: {"devices": {...}} / {"budget": {...}} or a bare Budget.snapshot()."""
    for key in ("devices", "budget"):
        if isinstance(snap.get(key), dict):
            snap = snap[key]
            break
    return {k: v for k, v in snap.items() if isinstance(v, dict) and "limit" in v and "used" in v}


def _int(d: dict[str, Any] | None, key: str) -> int:
    try:
        return int((d or {}).get(key, 0) or 0)
    except (TypeError, ValueError):
        return 0
