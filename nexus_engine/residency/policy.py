"""Who goes where: the residency policy as one pure function.

`decide(request, state, costs, limits)` -> Decision. No I/O, no clock, no torch: the manager passes the state
it owns (which towers are hot on the GPU, warm in RAM, in use, pinned, when last used), the costs from
footprints.py and the byte limits from the Budget, then applies the returned actions in order. Every state the
actions pass through stays inside the limits, so a manager applying them one by one never over-commits.

Rules, in the order they bite:
1. A tower in use, a pinned tower and a tower the request itself wants are never evicted.
2. A background request may not evict an interactive tower used in the last `keep_interactive_s`
   (voice and chat stay resident while an image renders).
3. Among the rest: background towers go first, then whatever is cheapest to bring back (reload time in
   coarse buckets, so near-equal costs count as equal), then the least recently used.
4. An evicted tower goes warm (its weights copied to RAM, page-locked while that share allows) when RAM has
   room once the load's own needs are met; otherwise cold (dropped, reloaded from disk).
5. A tower larger than the VRAM limit runs offloaded when its backend can (accelerate split: some layers in
   RAM; diffusers model offload: all components in RAM, one at a time on the GPU); else it is refused.
6. If only busy background towers stand in the way of an interactive request, the decision names them in
   `preempt`: the manager asks their jobs to yield at the next step boundary, then decides again.
A request is all or nothing: if any wanted tower cannot be placed, no action is returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from nexus_engine.config.units import fmt_bytes

GPU = "cuda:0"
CPU = "cpu"
Tier = Literal["hot", "warm"]
Mode = Literal["full", "offload"]


# ------------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class TowerCost:
    """What one tower costs, in bytes (measured after the first load, estimated before)."""

    name: str
    latency: str = "interactive"  # interactive | background
    device: str = "gpu"  # declared: gpu | cpu | offload
    gpu_bytes: int = 0  # the whole tower on the GPU (its quantized form)
    ram_bytes: int = 0  # a copy in RAM in the same form: a cpu tower, a warm copy, a diffusers offload
    split_ram_bytes: int = 0  # the whole tower in RAM as an accelerate split keeps it (bitsandbytes: unquantized)
    disk_bytes: int = 0  # what a cold load reads
    offload: str | None = None  # "split" (accelerate device_map), "model" (diffusers), None: cannot offload
    offload_min_gpu: int = 0  # the least VRAM an offloaded run needs
    measured: bool = False


@dataclass(frozen=True)
class Resident:
    """A tower that is not cold. Hot: loaded where it runs (GPU, CPU, or split). Warm: a copy in RAM."""

    name: str
    tier: Tier
    vram: int = 0
    ram: int = 0
    mode: Mode = "full"
    last_used: float = 0.0  # the manager's monotonic clock
    in_use: bool = False  # a job is running on it: never evicted mid-run
    pinned: bool = False  # the user asked to keep it: never evicted
    page_locked: bool = False  # a warm copy in pinned host memory (fast to bring back)


@dataclass(frozen=True)
class Limits:
    """Bytes towers may hold, after the Budget's reserve and what other processes use."""

    vram: int
    ram: int
    page_locked: int = 0  # the part of `ram` warm copies may pin (too much pinned memory starves the OS)


@dataclass(frozen=True)
class Bandwidth:
    """Transfer rates behind reload costs. Defaults: PCIe 4.0 x16 as measured, not as advertised."""

    pinned_gbps: float = 24.0  # page-locked host -> GPU
    pageable_gbps: float = 8.0  # ordinary host memory -> GPU (staged through a bounce buffer)
    disk_gbps: float = 2.0  # NVMe read
    cold_overhead_ms: float = 1500.0  # import, build the module, quantize: paid on every load from disk


@dataclass(frozen=True)
class Params:
    keep_interactive_s: float = 300.0  # rule 2: how long an interactive tower counts as "in the conversation"
    cost_quantum_ms: float = 500.0  # rule 3: reload times within one quantum count as equal (then LRU decides)
    bandwidth: Bandwidth = field(default_factory=Bandwidth)


@dataclass(frozen=True)
class Request:
    """The plan: towers wanted now, the class of the job asking, and the manager's clock."""

    want: tuple[str, ...]
    latency: str | None = None  # None: interactive if any wanted tower is interactive
    now: float = 0.0


# ------------------------------------------------------------------------------------------------ outputs
@dataclass(frozen=True)
class Evict:
    tower: str
    to: Literal["warm", "cold"]
    frees_vram: int
    frees_ram: int
    warm_ram: int = 0  # RAM the warm copy holds afterwards (0 when cold)
    page_locked: bool = False
    reload_ms: float = 0.0  # to bring it back from where it goes


@dataclass(frozen=True)
class Load:
    tower: str
    device: str  # GPU or CPU
    mode: Mode
    vram: int
    ram: int
    source: Literal["cold", "warm"]
    est_ms: float


@dataclass(frozen=True)
class Refusal:
    tower: str
    reason: str  # names the bytes
    retry: bool  # True: it would fit once busy, pinned or recently used towers let go


Action = Evict | Load


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...] = ()
    refused: tuple[Refusal, ...] = ()
    preempt: tuple[str, ...] = ()  # busy background towers that must yield first (then decide again)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.refused and not self.preempt


# ---------------------------------------------------------------------------------------------- accounting
def used(state: Mapping[str, Resident]) -> tuple[int, int]:
    """(VRAM, RAM) bytes the residents hold."""
    return sum(r.vram for r in state.values()), sum(r.ram for r in state.values())


def transfer_ms(nbytes: int, gbps: float) -> float:
    return nbytes / (gbps * 1e9) * 1e3


def cold_ms(cost: TowerCost, bw: Bandwidth) -> float:
    return bw.cold_overhead_ms + transfer_ms(cost.disk_bytes, bw.disk_gbps)


def apply(state: Mapping[str, Resident], action: Action, now: float) -> dict[str, Resident]:
    """The state after one action: what the manager's bookkeeping does (the stress test and planner use it)."""
    out = dict(state)
    if isinstance(action, Evict):
        r = out.pop(action.tower)
        if action.to == "warm":
            out[r.name] = replace(r, tier="warm", vram=0, ram=action.warm_ram, in_use=False,
                                  page_locked=action.page_locked)
        return out
    prev = out.get(action.tower)
    out[action.tower] = Resident(action.tower, "hot", action.vram, action.ram, action.mode, now,
                                 pinned=prev.pinned if prev else False)
    return out


# ---------------------------------------------------------------------------------------------- the policy
def decide(request: Request, state: Mapping[str, Resident], costs: Mapping[str, TowerCost], limits: Limits,
           params: Params | None = None) -> Decision:
    params = params or Params()
    missing = [n for n in request.want if n not in costs]
    if missing:
        unknown = tuple(Refusal(n, f"{n}: size unknown (no measurement and no `params` to estimate from)", False)
                        for n in missing)
        return Decision(refused=unknown, reason="; ".join(r.reason for r in unknown))
    latency = request.latency or ("interactive" if any(costs[n].latency == "interactive" for n in request.want)
                                  else "background")
    ctx = _Ctx(request.now, latency, frozenset(request.want), costs, limits, params)
    # placement order: what must sit wholly on the GPU first, offloaded towers last (they take what is left)
    order = sorted(dict.fromkeys(request.want), key=lambda n: (_likely_offload(costs[n], limits),
                                                               costs[n].latency != "interactive",
                                                               -costs[n].gpu_bytes))
    sim = dict(state)
    actions: list[Action] = []
    refused: list[Refusal] = []
    preempt: list[str] = []
    for name in order:
        if name in sim and sim[name].tier == "hot":
            continue
        out = _place(name, sim, ctx)
        if isinstance(out, Refusal):
            refused.append(out)
        elif isinstance(out, tuple):
            preempt.extend(t for t in out if t not in preempt)
        else:
            for act in out:
                sim = apply(sim, act, request.now)
            actions.extend(out)
    if refused or preempt:
        why = [r.reason for r in refused] + ([f"waiting for {', '.join(preempt)} to yield at a step boundary"]
                                              if preempt else [])
        return Decision(refused=tuple(refused), preempt=tuple(preempt), reason="; ".join(why))
    return Decision(actions=tuple(actions), reason=describe(actions) or "already resident")


@dataclass(frozen=True)
class _Ctx:
    now: float
    latency: str
    protected: frozenset[str]
    costs: Mapping[str, TowerCost]
    limits: Limits
    params: Params


def _likely_offload(cost: TowerCost, limits: Limits) -> bool:
    return cost.device == "offload" or (cost.device == "gpu" and cost.gpu_bytes > limits.vram)


def _place(name: str, sim: dict[str, Resident], ctx: _Ctx) -> list[Action] | tuple[str, ...] | Refusal:
    """Actions that make `name` hot; or the busy towers that must yield first; or why it cannot be."""
    cost = ctx.costs[name]
    own = sim.get(name)  # a warm copy becomes the load's source; its RAM is released by the load
    own_ram = own.ram if own else 0
    passes = (False, True) if ctx.latency == "interactive" else (False,)
    for busy in passes:
        pool = _evictable(sim, ctx, busy_background=busy)
        for mode, device, vram, ram in _options(cost, sim, pool, ctx.limits, own_ram):
            plan = _make_room(vram, max(0, ram - own_ram), pool, sim, ctx)
            if plan is None:
                continue
            busy_ones = tuple(e.tower for e in plan if sim[e.tower].in_use)
            if busy_ones:
                return busy_ones
            bw = ctx.params.bandwidth
            if own:
                est = transfer_ms(vram, bw.pinned_gbps if own.page_locked else bw.pageable_gbps)
            else:
                est = cold_ms(cost, bw)
            return [*plan, Load(name, device, mode, vram, ram, "warm" if own else "cold", round(est, 1))]
    return _refusal(cost, sim, ctx)


def _options(cost: TowerCost, sim: Mapping[str, Resident], pool: list[Resident], limits: Limits,
             own_ram: int) -> list[tuple[Mode, str, int, int]]:
    """(mode, device, vram, ram) to try, best first."""
    if cost.device == "cpu" or limits.vram <= 0:  # no GPU at all: everything runs on the CPU
        return [("full", CPU, 0, cost.ram_bytes)]
    free_v = limits.vram - used(sim)[0]
    full: tuple[Mode, str, int, int] = ("full", GPU, cost.gpu_bytes, 0)
    fits = cost.gpu_bytes <= limits.vram
    off = _offload_option(cost, sim, pool, limits, own_ram)
    if cost.device == "gpu":
        return ([full] if fits else []) + ([off] if off else [])
    # declared offload: whole on the GPU only if it fits without evicting anyone
    opts = [full] if cost.gpu_bytes <= free_v else []
    return opts + ([off] if off else []) + ([full] if fits and not opts else [])


def _offload_option(cost: TowerCost, sim: Mapping[str, Resident], pool: list[Resident], limits: Limits,
                    own_ram: int) -> tuple[Mode, str, int, int] | None:
    if cost.offload == "model":  # every component in RAM, the biggest one on the GPU at a time
        return ("offload", GPU, cost.offload_min_gpu, cost.ram_bytes)
    if cost.offload != "split" or cost.gpu_bytes <= 0:
        return None
    # an accelerate split runs faster the more layers sit on the GPU, so it claims all the VRAM it may
    claim_v = limits.vram - used(sim)[0] + sum(r.vram for r in pool)
    vram = min(cost.gpu_bytes, claim_v)
    if vram >= cost.gpu_bytes:  # it all fits: that is not offloading
        return ("full", GPU, cost.gpu_bytes, 0)
    if vram < cost.offload_min_gpu:
        return None
    ram = math.ceil(cost.split_ram_bytes * (1 - vram / cost.gpu_bytes))
    return ("offload", GPU, vram, ram)


def _evictable(sim: Mapping[str, Resident], ctx: _Ctx, busy_background: bool = False) -> list[Resident]:
    """Residents this request may push down a tier (rules 1 and 2), cheapest to lose first (rule 3)."""
    out = []
    for r in sim.values():
        cost = ctx.costs.get(r.name)
        interactive = cost is not None and cost.latency == "interactive"
        if r.name in ctx.protected or r.pinned:
            continue
        if r.in_use and not (busy_background and not interactive):
            continue
        if ctx.latency != "interactive" and interactive and ctx.now - r.last_used < ctx.params.keep_interactive_s:
            continue
        out.append(r)
    return sorted(out, key=lambda r: _evict_key(r, ctx))


def _evict_key(r: Resident, ctx: _Ctx) -> tuple[int, int, float]:
    cost = ctx.costs.get(r.name)
    background = cost is None or cost.latency != "interactive"
    bw = ctx.params.bandwidth
    going_warm = r.tier == "hot" and r.vram > 0
    back = transfer_ms(r.vram, bw.pinned_gbps) if going_warm else (cold_ms(cost, bw) if cost else 0.0)
    return (0 if background else 1, int(back // ctx.params.cost_quantum_ms), r.last_used)


def _make_room(need_v: int, need_r: int, pool: list[Resident], sim: Mapping[str, Resident],
               ctx: _Ctx) -> list[Evict] | None:
    """Evictions (in a safe order) that leave `need_v` VRAM and `need_r` RAM free; None if impossible."""
    lim = ctx.limits
    vram_used, ram_used = used(sim)
    free_v, free_r = lim.vram - vram_used, lim.ram - ram_used
    gpu_out: list[Resident] = []
    for r in pool:  # VRAM first; count each evictee as going cold for now
        if free_v >= need_v:
            break
        if r.tier == "hot" and r.vram > 0:
            gpu_out.append(r)
            free_v, free_r = free_v + r.vram, free_r + r.ram
    if free_v < need_v:
        return None
    ram_out: list[Resident] = []
    for r in pool:  # then RAM: warm copies and CPU-resident parts go cold
        if free_r >= need_r:
            break
        if r not in gpu_out and r.ram > 0:
            ram_out.append(r)
            free_v, free_r = free_v + r.vram, free_r + r.ram
    if free_r < need_r:
        return None
    # warm copies for the GPU evictees, most worth keeping first, out of the RAM the load leaves spare
    spare = free_r - need_r
    locked_free = lim.page_locked - sum(r.ram for r in sim.values() if r.tier == "warm" and r.page_locked)
    bw = ctx.params.bandwidth
    warm: list[Evict] = []
    cold: list[Evict] = [Evict(r.name, "cold", r.vram, r.ram, reload_ms=_cold_back(r, ctx)) for r in ram_out]
    for r in reversed(gpu_out):
        size = r.vram + r.ram
        if size <= spare:
            spare -= size
            locked = size <= locked_free
            locked_free -= size if locked else 0
            back = transfer_ms(r.vram, bw.pinned_gbps if locked else bw.pageable_gbps)
            warm.append(Evict(r.name, "warm", r.vram, r.ram, size, locked, round(back, 1)))
        else:
            cold.append(Evict(r.name, "cold", r.vram, r.ram, reload_ms=_cold_back(r, ctx)))
    return cold + warm  # cold first: they only free bytes; warm copies then fill RAM that is surely free


def _cold_back(r: Resident, ctx: _Ctx) -> float:
    cost = ctx.costs.get(r.name)
    return round(cold_ms(cost, ctx.params.bandwidth), 1) if cost else 0.0


# -------------------------------------------------------------------------------------------- refusals
def _refusal(cost: TowerCost, sim: Mapping[str, Resident], ctx: _Ctx) -> Refusal:
    lim = ctx.limits
    feasible = [o for o in _options(cost, {}, [], lim, 0) if o[2] <= lim.vram and o[3] <= lim.ram]
    if not feasible:
        return Refusal(cost.name, _too_big(cost, lim), retry=False)
    # it fits an empty budget: say what it needs (the least VRAM it can run in) and who holds the memory
    need = min(feasible, key=lambda o: o[2])
    vram_used, ram_used = used(sim)
    short_vram = need[2] > lim.vram - vram_used
    holders = []
    for r in sorted(sim.values(), key=lambda r: -(r.vram if short_vram else r.ram)):
        c = ctx.costs.get(r.name)
        held = r.vram if short_vram else r.ram
        why = ("in use" if r.in_use else "pinned" if r.pinned else
               "wanted by this request" if r.name in ctx.protected else
               "recently used, interactive" if c is not None and c.latency == "interactive"
               and ctx.latency != "interactive" and ctx.now - r.last_used < ctx.params.keep_interactive_s
               else None)
        if why and held and r.name != cost.name:  # its own warm copy is released by the load itself
            holders.append(f"{r.name} ({why}, {fmt_bytes(held)})")
    more = f" and {len(holders) - 4} more" if len(holders) > 4 else ""
    held = f"; held by {', '.join(holders[:4])}{more}" if holders else ""
    return Refusal(cost.name,
                   f"{cost.name} needs {_describe_need(need)}; free now {fmt_bytes(lim.vram - vram_used)} of "
                   f"{fmt_bytes(lim.vram)} VRAM and {fmt_bytes(lim.ram - ram_used)} of {fmt_bytes(lim.ram)} RAM"
                   f"{held}", retry=True)


def _describe_need(opt: tuple[Mode, str, int, int]) -> str:
    mode, device, vram, ram = opt
    if device == CPU:
        return f"{fmt_bytes(ram)} RAM"
    if mode == "full":
        return f"{fmt_bytes(vram)} VRAM"
    return f"{fmt_bytes(vram)} VRAM + {fmt_bytes(ram)} RAM offloaded"


def _too_big(cost: TowerCost, lim: Limits) -> str:
    """Why a tower cannot fit even into an empty budget, with the numbers."""
    name, gpu = cost.name, fmt_bytes(cost.gpu_bytes)
    budget = f"budget: {fmt_bytes(lim.vram)} VRAM, {fmt_bytes(lim.ram)} RAM"
    if cost.device == "cpu" or lim.vram <= 0:
        return f"{name} needs {fmt_bytes(cost.ram_bytes)} RAM on the CPU; {budget}"
    if cost.offload is None:
        return f"{name} needs {gpu} VRAM and its backend cannot offload; {budget}"
    if cost.offload == "model":
        return (f"{name} offloaded needs {fmt_bytes(cost.ram_bytes)} RAM for its components and "
                f"{fmt_bytes(cost.offload_min_gpu)} VRAM for the largest; {budget}")
    # split: the GPU share needed so the rest fits in RAM
    need_v = math.ceil(cost.gpu_bytes * max(0.0, 1 - lim.ram / cost.split_ram_bytes)) if cost.split_ram_bytes else 0
    return (f"{name} is {gpu} on the GPU; offloaded, the layers left in RAM take "
            f"{fmt_bytes(cost.split_ram_bytes)} if all moved there, so at least {fmt_bytes(need_v)} must stay "
            f"in VRAM for the rest to fit; {budget}")


def describe(actions: list[Action] | tuple[Action, ...]) -> str:
    parts = []
    for a in actions:
        if isinstance(a, Evict):
            parts.append(f"evict {a.tower} -> {a.to} (frees {fmt_bytes(a.frees_vram)} VRAM)")
        elif a.mode == "offload":
            parts.append(f"load {a.tower} offloaded ({fmt_bytes(a.vram)} VRAM + {fmt_bytes(a.ram)} RAM, "
                         f"~{a.est_ms / 1000:.1f} s from {a.source})")
        else:
            where = f"{fmt_bytes(a.vram)} VRAM" if a.device == GPU else f"{fmt_bytes(a.ram)} RAM"
            parts.append(f"load {a.tower} on {a.device} ({where}, ~{a.est_ms / 1000:.1f} s from {a.source})")
    return "; ".join(parts)
