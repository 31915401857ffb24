"""The residency manager: the one owner of which towers are hot (loaded where they run), warm (weights kept in
RAM) or cold (only on disk). Ollama's scheduler in shape: every load and eviction goes through here, the
decisions come from the pure policy.decide(), and this file only applies them.

Jobs ask with `acquire(towers, latency)` and hold the returned Lease (a context manager) for their whole run: a
tower with a lease is never evicted. Towers that are all hot are handed out at once; otherwise one decision
at a time — decide() gets the residents, their costs (measured footprints, else estimates) and the Budget's
limits — and its answer is applied in order:
  Evict warm  the module's weights go to a page-locked host arena (warm.py); its GPU bytes are released
  Evict cold  tower.unload(), every byte released (towers that are not torch modules only have this)
  Load warm   swap-in: one copy from the arena into one device buffer; the host copy is kept ("kept" bytes),
              so the next swap-out only re-points the weights (they are frozen), and is dropped first when RAM
              runs short
  Load cold   budget.reserve, tower.load(), budget.commit with the measured bytes, FootprintStore.record
  preempt     background leases on those towers are asked to yield (Lease.should_yield(), checked by generation
              loops at step boundaries); the manager waits for their release (boundedly, outside the scheduler
              lock, so other requests go on) and decides again
  refused     a `refuse` event and BudgetError with the policy's numbers
A load that runs out of memory (torch.cuda.OutOfMemoryError, MemoryError, or measured bytes the budget cannot
hold) is undone, the tower's size corrected from the measurement and recorded, the limits shrunk, and the
decision taken again once; a second failure is a refusal, never a crashed worker.

Every change is a TowerEvent with bytes and milliseconds: load, unload, evict, swap_out, swap_in, oom, refuse,
preempt. snapshot() is the tower monitor's view. torch is imported only where a warm copy or a GPU is involved.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from nexus_engine import registry
from nexus_engine.config.schema import ModelsConfig, TowerSpec
from nexus_engine.config.units import fmt_bytes
from nexus_engine.errors import BudgetError, ModelMissingError
from nexus_engine.protocol import Message, ResidencyEvent, TowerEvent
from nexus_engine.residency.budget import Budget
from nexus_engine.residency.footprints import FootprintStore, cost_for
from nexus_engine.residency.lease import Attempt, Busy, Lease, Slot
from nexus_engine.residency.oom import (
    OutOfMemoryOnLoad,
    cuda_mark,
    cuda_peak,
    empty_cuda_cache,
    first_line,
    is_oom,
    tried_bytes,
)
from nexus_engine.residency.policy import CPU, GPU, Decision, Evict, Limits, Load, Params, Request, Resident, decide
from nexus_engine.towers.base import Footprint, Tower

log = logging.getLogger("nexus.residency")
Emit = Callable[[Message], None]

OOM_GROWTH = 1.25  # a load that ran out of memory needed at least this much more than was planned for it
OOM_MARGIN = 0.10  # an OOM the numbers did not predict (fragmentation, a process that grabbed memory since the
MAX_MARGIN = 0.25  # probe): keep 10 % of the failed size more free on that device from then on, at most 25 %
MAX_PASSES = 100  # decide/apply rounds per acquire: each one changes something or waits; never a silent spin
HINT = ("unload a tower, choose a smaller quantization, or set device = \"offload\" in models.toml "
        "(`nexus plan` shows what fits)")


class ResidencyManager:
    def __init__(self, config: ModelsConfig, budget: Budget, store: FootprintStore | None = None,
                 emit: Emit | None = None, *, build: Callable[[TowerSpec], Tower] | None = None,
                 params: Params | None = None, gpu_device: str = "cuda:0", preempt_wait_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.budget = budget
        self.store = store or FootprintStore()
        self.emit = emit
        self.params = params or Params()
        self.gpu_device = gpu_device  # the torch device behind the budget's GPU line ("cpu" simulates one in tests)
        self.preempt_wait_s = preempt_wait_s
        self._build = build or registry.build
        self._clock = clock
        self._slots: dict[str, Slot] = {}
        self._leases: set[Lease] = set()
        self._margin = {GPU: 0, CPU: 0}
        self._releases = 0  # count of leases ended: what a waiting refusal watches
        self._cond = threading.Condition()  # guards slots, leases, margins; never held during a load
        self._sched = threading.RLock()  # one decision-and-apply at a time (loads included)

    # ------------------------------------------------------------------------------------------ public
    def acquire(self, towers: Iterable[str], latency: str | None = None, *, emit: Emit | None = None,
                request_id: str = "", wait_s: float = 0.0) -> Lease:
        """Make `towers` hot and hold them for one run. `wait_s`: how long a refusal that could clear (memory
        held by running jobs) may wait for a release before it is raised."""
        names = tuple(dict.fromkeys(towers))
        specs = [self._slot(n).spec for n in names]
        latency = latency or ("interactive" if any(s.latency == "interactive" for s in specs) else "background")
        lease = Lease(self, names, latency)
        if self._take(lease):
            return lease
        send = self._sender(emit, request_id)
        run = Attempt(time.monotonic() + self.preempt_wait_s, time.monotonic() + wait_s)
        try:
            for _ in range(MAX_PASSES):
                with self._sched:
                    wait_for = self._step(lease, send, run)
                if wait_for is None:
                    return lease
                with self._cond:  # outside the scheduler: other requests go on while this one waits
                    self._cond.wait_for(wait_for, timeout=max(0.0, run.deadline - time.monotonic()))
        finally:
            with self._cond:
                for t in run.asked:
                    self._slots[t].yielding = False
        # every pass changed something, but concurrent requests kept taking what this one freed: refuse, never spin
        raise BudgetError(f"could not make room for {', '.join(names)}: other requests kept changing what is "
                          f"loaded ({MAX_PASSES} tries); try again when they finish", HINT)

    def unload(self, name: str, emit: Emit | None = None, request_id: str = "") -> None:
        """Drop a tower to cold (the user asked). Refused while a job runs on it."""
        send = self._sender(emit, request_id)
        with self._sched:
            slot = self._slot(name)
            with self._cond:
                if slot.tier == "cold":
                    return
                if slot.users:
                    raise BudgetError(f"{name} is in use by a running job", "wait for it to finish or cancel it")
                slot.busy = True
            try:
                self._drop(slot, send, "unload", "unloaded on request")
            finally:
                slot.busy = False

    def pin(self, name: str, pinned: bool = True) -> None:
        """Keep a tower resident: the policy never evicts a pinned tower."""
        slot = self._slot(name)
        with self._cond:
            slot.pinned = pinned

    def towers(self) -> dict[str, Tower]:
        with self._cond:
            return {n: s.tower for n, s in self._slots.items() if s.tower is not None}

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe view for the tower monitor: the budget, and per tower its tier, bytes and users."""
        now = self._clock()
        with self._cond:
            towers = {n: {"tier": s.tier, "loaded": s.tier == "hot", "device": s.device if s.tier == "hot" else "",
                          "mode": s.mode, "vram": s.vram, "ram": s.ram + s.kept, "kept_ram": s.kept,
                          "page_locked": s.page_locked, "in_use": s.users > 0, "users": s.users,
                          "pinned": s.pinned, "measured": s.tier != "cold",  # every size here was measured
                          "idle_s": round(now - s.last_used, 3) if s.last_used else None}
                      for n, s in self._slots.items()}
            margin = dict(self._margin)
        return {"budget": self.budget.snapshot(), "towers": towers, "oom_margin": margin}

    # ------------------------------------------------------------------------------------------ leases
    def _slot(self, name: str) -> Slot:
        with self._cond:
            slot = self._slots.get(name)
            if slot is None:
                spec = self.config.towers.get(name)
                if spec is None:
                    raise ModelMissingError(f"unknown tower {name!r}",
                                            f"declared towers: {', '.join(sorted(self.config.towers))}")
                slot = self._slots[name] = Slot(spec)
            return slot

    def _take(self, lease: Lease) -> bool:
        """Hand out the lease if every tower is hot (the fast path, and the end of every scheduling)."""
        with self._cond:
            slots = [self._slots[n] for n in lease.towers]
            if not all(s.tier == "hot" and not s.busy for s in slots):
                return False
            if lease.latency == "background" and any(s.yielding for s in slots):
                return False  # an interactive request is waiting for this memory
            for s in slots:
                s.users += 1
            self._leases.add(lease)
        for n in lease.towers:
            lease.info.setdefault(n, {"load_ms": 0.0, "origin": "resident"})
        return True

    def _release(self, lease: Lease) -> None:
        with self._cond:
            if lease._released:
                return
            lease._released = True
            self._leases.discard(lease)
            now = self._clock()
            for n in lease.towers:
                slot = self._slots[n]
                slot.users -= 1
                slot.last_used = now
            self._releases += 1
            self._cond.notify_all()

    def _sender(self, emit: Emit | None, request_id: str) -> Callable[..., None]:
        sink = emit or self.emit

        def send(**fields: Any) -> None:
            log.info("%s %s: %s bytes, %.1f ms %s", fields.get("action"), fields.get("tower"), fields.get("bytes", 0),
                     fields.get("ms", 0.0), fields.get("detail", ""))
            if sink is not None:
                sink(TowerEvent(id=request_id, **fields))
                sink(ResidencyEvent(id=request_id, snapshot=self.snapshot()))  # the monitor redraws from real bytes
        return send

    # -------------------------------------------------------------------------------------- scheduling
    def _step(self, lease: Lease, send: Callable[..., None], run: Attempt) -> Callable[[], bool] | None:
        """One decision, applied. None: the lease is granted. Else what to wait for before the next step
        (run.deadline says how long); raises BudgetError on a refusal."""
        if self._take(lease):
            return None
        with self._cond:
            releases = self._releases  # before deciding: a release during the decision must not be missed
        decision = self._decide(lease)
        now = time.monotonic()
        if decision.preempt:
            if now >= run.preempt_deadline:
                self._refuse_preempt(lease, decision.preempt, send)
            self._preempt(lease, decision.preempt, run.asked, send)
            run.deadline = run.preempt_deadline
            busy = decision.preempt
            return lambda: not any(self._slots[t].users for t in busy)
        if decision.refused:
            if all(r.retry for r in decision.refused) and now < run.wait_deadline:
                run.deadline = run.wait_deadline
                return lambda: self._releases != releases  # any lease ending may free the memory
            self._refuse(decision, send)
        try:
            for action in decision.actions:
                lease.info.update(self._apply(action, send))
        except Busy:
            pass
        except OutOfMemoryOnLoad as oom:
            if oom.tower in run.retried:
                self._refuse_oom(oom, send)
            run.retried.add(oom.tower)
            self._correct(oom, send)
        run.deadline = now
        return lambda: True  # decide again at once

    def _decide(self, lease: Lease) -> Decision:
        for attempt in (0, 1):
            with self._cond:
                now = self._clock()
                state = {n: Resident(n, "hot" if s.tier == "hot" else "warm", s.vram, s.ram, s.mode,  # type: ignore[arg-type]
                                     s.last_used, s.users > 0, s.pinned, s.page_locked)
                         for n, s in self._slots.items() if s.tier != "cold"}
                kept = sum(s.kept for s in self._slots.values())
                kept_locked = sum(s.kept for s in self._slots.values() if s.page_locked)
                margin = dict(self._margin)
            lim = self.budget.limits()
            # kept host copies are RAM the budget holds but the policy does not see as residents' bytes
            limits = Limits(vram=max(0, lim.vram - margin[GPU]), ram=max(0, lim.ram - kept - margin[CPU]),
                            page_locked=max(0, lim.page_locked - kept_locked))
            costs = {}
            for n in {*state, *lease.towers}:
                cost = cost_for(self._slots[n].spec, self.store)
                warm = self._slots[n].warm
                if cost is not None and warm is not None and warm.nbytes > cost.gpu_bytes:
                    # a swap-in reserves the arena, whose tensors are aligned: a little more than the measured
                    # footprint (found by `nexus bench stress`: tight budgets refused the swap-in and retried)
                    cost = replace(cost, gpu_bytes=warm.nbytes)
                if cost is not None:
                    costs[n] = cost
            d = decide(Request(lease.towers, lease.latency, now), state, costs, limits, self.params)
            short = d.refused or any(isinstance(a, Evict) and a.to == "cold" for a in d.actions)
            if attempt == 0 and kept and short:
                self._drop_kept()  # kept copies are a cache: they go before any tower has to
                continue
            return d
        raise AssertionError("unreachable")

    def _preempt(self, lease: Lease, towers: tuple[str, ...], asked: set[str], send: Callable[..., None]) -> None:
        """Ask the background jobs on `towers` to stop at their next step boundary."""
        for t in towers:  # the event first: the job may stop the moment its flag is set
            if t not in asked:
                asked.add(t)
                send(tower=t, action="preempt",
                     detail=f"asked to yield at its next step boundary: {', '.join(lease.towers)} needs the memory")
        with self._cond:
            for t in towers:
                self._slots[t].yielding = True  # no new background lease on it until this request is served
            for other in self._leases:
                if other.latency == "background" and set(other.towers) & set(towers):
                    other._yield.set()

    def _refuse_preempt(self, lease: Lease, towers: tuple[str, ...], send: Callable[..., None]) -> None:
        msg = (f"{', '.join(towers)} did not yield within {self.preempt_wait_s:g} s, so "
               f"{', '.join(lease.towers)} cannot get the memory they hold")
        for t in lease.towers:
            send(tower=t, action="refuse", detail=msg)
        raise BudgetError(msg, "cancel the background job, or try again when it finishes")

    def _refuse(self, decision: Decision, send: Callable[..., None]) -> None:
        for r in decision.refused:
            cost = cost_for(self._slots[r.tower].spec, self.store)
            send(tower=r.tower, action="refuse", bytes=cost.gpu_bytes if cost else 0, detail=r.reason)
        raise BudgetError(decision.reason, HINT)

    # ----------------------------------------------------------------------------------------- actions
    def _apply(self, action: Evict | Load, send: Callable[..., None]) -> dict[str, dict[str, Any]]:
        slot = self._slots[action.tower]
        with self._cond:
            if isinstance(action, Evict) and slot.users:
                raise Busy(action.tower)
            slot.busy = True
        try:
            if isinstance(action, Evict):
                if action.to == "warm" and slot.tier == "hot":
                    self._swap_out(slot, action, send)
                else:
                    self._drop(slot, send, "evict", f"to cold: {fmt_bytes(action.frees_vram)} VRAM freed")
                return {}
            if action.source == "warm" and slot.tier == "warm" and slot.warm is not None:
                return self._swap_in(slot, send)
            return self._load_cold(slot, action, send)
        finally:
            slot.busy = False

    def _swap_out(self, slot: Slot, action: Evict, send: Callable[..., None]) -> None:
        module = self._module(slot)
        if module is None or slot.mode != "full" or slot.device != GPU:
            return self._drop(slot, send, "evict", "no warm tier for this tower (not a single-device torch "
                                                   "module): unloaded")
        from nexus_engine.residency.warm import WarmModule, WarmUnsupported

        t0 = time.perf_counter()
        fresh = slot.warm is None or not slot.warm.has_host
        try:
            warm = slot.warm or WarmModule(module)
            if fresh:  # claim the RAM before touching it; BudgetError means no room for a copy
                self.budget.resize(slot.name, CPU, slot.ram + slot.kept + warm.nbytes)
                try:
                    warm.to_host(pin=action.page_locked)
                except Exception:
                    self.budget.resize(slot.name, CPU, slot.ram + slot.kept)
                    raise
            else:
                warm.to_host()
        except (WarmUnsupported, BudgetError, MemoryError, RuntimeError) as e:
            return self._drop(slot, send, "evict", f"no warm copy ({e}): unloaded")
        self.budget.resize(slot.name, CPU, warm.nbytes)  # the arena now holds every tensor the tower had
        self.budget.release(slot.name, GPU)
        release_cache = getattr(slot.tower, "release_cache", None)
        if callable(release_cache):  # a KV cache on the GPU would outlive the weights
            try:
                release_cache()
            except Exception:
                log.exception("%s: release_cache failed", slot.name)
        with self._cond:
            slot.tier, slot.vram, slot.ram, slot.kept = "warm", 0, warm.nbytes, 0
            slot.warm, slot.page_locked = warm, warm.pinned
        empty_cuda_cache()
        where = "page-locked RAM" if warm.pinned else "RAM (pageable: page-locked share used up or unavailable)"
        send(tower=slot.name, action="swap_out", bytes=warm.nbytes, ms=(time.perf_counter() - t0) * 1000,
             detail=("weights copied to " if fresh else "kept copy in ") + where)

    def _swap_in(self, slot: Slot, send: Callable[..., None]) -> dict[str, dict[str, Any]]:
        warm = slot.warm
        try:
            self.budget.reserve(slot.name, GPU, warm.nbytes)
        except BudgetError as e:
            raise OutOfMemoryOnLoad(slot.name, GPU, warm.nbytes, e.message, 0.0, False) from e
        try:
            ms = warm.to_device(self._torch_device(GPU))
        except Exception as e:
            self.budget.release(slot.name, GPU)
            if not is_oom(e):
                raise
            empty_cuda_cache()
            raise OutOfMemoryOnLoad(slot.name, GPU, warm.nbytes, first_line(e), 0.0, True) from e
        self.budget.commit(slot.name, GPU, warm.nbytes)
        with self._cond:  # the arena stays as the kept copy: RAM bytes unchanged in the budget
            slot.tier, slot.device, slot.mode = "hot", GPU, "full"
            slot.vram, slot.kept, slot.ram = warm.nbytes, slot.ram, 0
            slot.last_used = self._clock()
        gbps = warm.nbytes / (ms * 1e6) if ms > 0 else 0.0
        send(tower=slot.name, action="swap_in", bytes=warm.nbytes, ms=ms,
             detail=f"{gbps:.1f} GB/s from {'page-locked' if warm.pinned else 'pageable'} RAM")
        return {slot.name: {"load_ms": ms, "origin": "warm", "gbps": round(gbps, 2), "host_memory": warm.host_memory}}

    def _load_cold(self, slot: Slot, action: Load, send: Callable[..., None]) -> dict[str, dict[str, Any]]:
        name = slot.name
        if slot.tower is None:
            slot.tower = self._build(slot.spec)
        tower = slot.tower
        try:
            if action.vram:
                self.budget.reserve(name, GPU, action.vram)
            if action.ram:
                self.budget.reserve(name, CPU, action.ram)
        except BudgetError as e:  # free memory changed since the decision (another process): decide again
            self.budget.release(name)
            raise OutOfMemoryOnLoad(name, action.device, None, e.message, 0.0, False) from e
        mark = cuda_mark(self.gpu_device if action.device == GPU else None)
        t0 = time.perf_counter()
        try:
            info = tower.load()
        except Exception as e:
            ms = (time.perf_counter() - t0) * 1000
            self._undo(slot)
            if not is_oom(e):
                raise
            planned = action.vram if action.device == GPU else action.ram
            need = max(int(planned * OOM_GROWTH), cuda_peak(self.gpu_device, mark) + tried_bytes(str(e)))
            raise OutOfMemoryOnLoad(name, action.device, need, first_line(e), ms, True) from e
        fp = tower.footprint()
        try:
            self._commit(name, GPU, fp.vram)
            self._commit(name, CPU, fp.ram)
        except BudgetError as e:
            self._undo(slot)
            need = fp.vram if action.device == GPU else fp.ram
            raise OutOfMemoryOnLoad(name, action.device, need, f"measured {fmt_bytes(need)} after loading: {e.message}",
                               info.ms, False) from e
        if action.mode == "full":  # an offloaded split's bytes say nothing about the whole tower
            self.store.record(name, slot.spec.quantization, "gpu" if action.device == GPU else "cpu",
                              Footprint(ram=fp.ram, vram=fp.vram, measured=True))
        with self._cond:
            slot.tier, slot.device, slot.mode = "hot", action.device, action.mode
            slot.vram, slot.ram, slot.kept, slot.page_locked = fp.vram, fp.ram, 0, False
            slot.last_used = self._clock()
        send(tower=name, action="load", bytes=fp.ram + fp.vram, ms=info.ms, detail=info.origin)
        return {name: {"load_ms": info.ms, "origin": info.origin, **info.details}}

    def _drop(self, slot: Slot, send: Callable[..., None], action: str, detail: str) -> None:
        """Unload to cold: the tower, its warm copy and every byte it held."""
        t0 = time.perf_counter()
        freed = slot.vram + slot.ram + slot.kept
        self._undo(slot)
        send(tower=slot.name, action=action, bytes=freed, ms=(time.perf_counter() - t0) * 1000, detail=detail)

    def _undo(self, slot: Slot) -> None:
        if slot.tower is not None:
            try:
                slot.tower.unload()
            except Exception:  # a half-loaded tower may fail to unload; its bytes are released regardless
                log.exception("unloading %s failed", slot.name)
        if slot.warm is not None:
            slot.warm.close()
        self.budget.release(slot.name)
        with self._cond:
            slot.tier, slot.vram, slot.ram, slot.kept, slot.warm, slot.page_locked = "cold", 0, 0, 0, None, False
        empty_cuda_cache()

    def _drop_kept(self) -> None:
        with self._cond:
            slots = [s for s in self._slots.values() if s.kept and s.warm is not None]
        for s in slots:
            freed = s.warm.drop_host()
            self.budget.resize(s.name, CPU, s.ram)
            with self._cond:
                s.kept, s.page_locked = 0, False
            log.info("dropped the kept host copy of %s (%s): RAM is needed", s.name, fmt_bytes(freed))

    def _commit(self, owner: str, device: str, nbytes: int) -> None:
        if nbytes > 0:
            self.budget.commit(owner, device, nbytes)
        else:
            self.budget.release(owner, device)

    # ------------------------------------------------------------------------------------- out of memory
    def _correct(self, oom: OutOfMemoryOnLoad, send: Callable[..., None]) -> None:
        """Record what the failed load showed it needs; after a surprise, keep more of that device free."""
        if oom.need:
            on_gpu = oom.device == GPU
            fp = Footprint(ram=0 if on_gpu else oom.need, vram=oom.need if on_gpu else 0, measured=True)
            spec = self._slots[oom.tower].spec
            self.store.record(oom.tower, spec.quantization, "gpu" if oom.device == GPU else "cpu", fp)
            if oom.surprise:
                with self._cond:
                    cap = int(self.budget.limit(oom.device) * MAX_MARGIN)
                    self._margin[oom.device] = min(cap, self._margin[oom.device] + int(oom.need * OOM_MARGIN))
        size = f"size corrected to {fmt_bytes(oom.need)}, " if oom.need else ""
        send(tower=oom.tower, action="oom", bytes=oom.need or 0, ms=oom.ms,
             detail=f"out of memory while loading ({oom.detail}); {size}deciding again")

    def _refuse_oom(self, oom: OutOfMemoryOnLoad, send: Callable[..., None]) -> None:
        memory = "GPU memory" if oom.device == GPU else "RAM"
        need = f"; it needs at least {fmt_bytes(oom.need)}" if oom.need else ""
        msg = (f"{oom.tower} ran out of {memory} while loading, twice{need}, and "
               f"{fmt_bytes(self.budget.available(oom.device))} of {fmt_bytes(self.budget.limit(oom.device))} "
               f"is available after the evictions the policy allows ({oom.detail})")
        send(tower=oom.tower, action="refuse", bytes=oom.need or 0, detail=msg)
        raise BudgetError(msg, HINT)

    # ------------------------------------------------------------------------------------------ torch
    def _torch_device(self, device: str) -> str:
        return self.gpu_device if device == GPU else "cpu"

    def _module(self, slot: Slot) -> Any:
        if "torch" not in sys.modules or slot.tower is None:  # nothing torch-based was ever loaded
            return None
        from nexus_engine.residency.warm import module_of

        return module_of(slot.tower)
