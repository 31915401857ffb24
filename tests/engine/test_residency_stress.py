"""Randomized stress: 1000 plan requests against a budget much smaller than the towers, applied to a simulated
state and to a real Budget step by step; then several threads at once, under a watchdog.

Invariants: the accounted bytes never exceed the limits (the Budget would raise if a decision over-committed),
the policy's view and the Budget's agree, towers in use or pinned are never evicted, a refused plan changes
nothing, a preemption only ever names busy background towers, and nothing deadlocks.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest

from nexus_engine.errors import BudgetError
from nexus_engine.residency.budget import Budget, DeviceBudget
from nexus_engine.residency.policy import (
    CPU,
    GPU,
    Action,
    Evict,
    Limits,
    Request,
    Resident,
    TowerCost,
    apply,
    decide,
    used,
)

G = 1024**3
SEEDS = (4, 5, 6)
LIMITS = Limits(vram=16 * G, ram=24 * G, page_locked=12 * G)
BYTES_RE = re.compile(r"\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)")


def catalog(rng: random.Random) -> dict[str, TowerCost]:
    """14 towers: small and large, interactive and background, GPU, CPU, split-offload and model-offload."""
    out = {}
    for i in range(14):
        size = int(rng.uniform(0.5, 12) * G) if i < 10 else int(rng.uniform(18, 30) * G)  # the last 4 > VRAM
        latency = rng.choice(["interactive", "background"])
        device, offload, split, min_gpu = "gpu", None, size, 0
        if i >= 10 or rng.random() < 0.2:
            device, offload = "offload", rng.choice(["split", "model"])
            split = int(size * rng.choice([1.0, 1.8]))  # bitsandbytes splits keep RAM layers unquantized
            min_gpu = int(size * (0.1 if offload == "split" else 0.6))
        elif rng.random() < 0.15:
            device = "cpu"
        out[f"t{i}"] = TowerCost(f"t{i}", latency, device, size, size, split, size, offload, min_gpu)
    return out


def budget_apply(budget: Budget, act: Action) -> None:
    """What the manager will do per action; BudgetError here means the policy over-committed."""
    if isinstance(act, Evict):
        if act.to == "cold":
            budget.release(act.tower)
        else:
            budget.release(act.tower, GPU)
            budget.resize(act.tower, CPU, act.warm_ram)
        return
    if act.vram:
        budget.reserve(act.tower, GPU, act.vram)
        budget.commit(act.tower, GPU)
    budget.resize(act.tower, CPU, act.ram)  # replaces a warm copy's bytes


def exact_budget() -> Budget:
    return Budget([DeviceBudget(GPU, LIMITS.vram), DeviceBudget(CPU, LIMITS.ram)])  # no reserve: limits exactly


@pytest.mark.parametrize("seed", SEEDS)
def test_1000_random_requests_stay_within_budget(seed: int) -> None:
    run_with_watchdog([lambda: random_requests(seed)], timeout=30.0)  # a hang fails the test instead of the run


def random_requests(seed: int) -> None:
    rng = random.Random(seed)
    costs = catalog(rng)
    assert sum(c.gpu_bytes for c in costs.values()) > 2 * (LIMITS.vram + LIMITS.ram)
    names = sorted(costs)
    budget = exact_budget()
    state: dict[str, Resident] = {}
    seen: Counter[str] = Counter()
    for i in range(1000):
        now = float(i * 20)
        for name, r in list(state.items()):  # running jobs finish now and then; background jobs run longer
            if r.in_use and rng.random() < (0.2 if costs[name].latency == "background" else 0.6):
                state[name] = replace(r, in_use=False)
        if state and rng.random() < 0.05:  # the user pins something, and later unpins it
            name = rng.choice(sorted(state))
            state[name] = replace(state[name], pinned=True)
        pinned = sorted(n for n, r in state.items() if r.pinned)
        if pinned and rng.random() < 0.1:
            state[pinned[0]] = replace(state[pinned[0]], pinned=False)
        want = tuple(rng.sample(names, k=rng.choice([1, 1, 1, 2, 3])))
        req = Request(want, latency=rng.choice([None, None, "background"]), now=now)
        d = decide(req, state, costs, LIMITS)
        if d.preempt:
            seen["preempt"] += 1
            assert not d.actions
            for t in d.preempt:
                assert state[t].in_use and costs[t].latency == "background", t
                state[t] = replace(state[t], in_use=False)  # the job yields at its next step boundary
            d = decide(req, state, costs, LIMITS)
        if not d.ok:
            seen["refused"] += 1
            assert not d.actions and d.reason
            for r in d.refused:
                assert BYTES_RE.search(r.reason) or "size unknown" in r.reason, r.reason
            continue
        seen["ok"] += 1
        for act in d.actions:
            if isinstance(act, Evict):
                before = state[act.tower]
                assert not before.in_use and not before.pinned and act.tower not in want
                seen[f"evict-{act.to}"] += 1
            else:
                seen[f"load-{act.mode}-{act.source}"] += 1
            budget_apply(budget, act)
            state = apply(state, act, now)
            vram, ram = used(state)
            assert vram <= LIMITS.vram and ram <= LIMITS.ram, (i, act)
            assert (budget.used(GPU), budget.used(CPU)) == (vram, ram)
        for t in want:
            assert state[t].tier == "hot"
            state[t] = replace(state[t], last_used=now, in_use=rng.random() < 0.3)
    # the run exercised every path, so the invariants above were really tested
    for key in ("ok", "refused", "preempt", "evict-warm", "evict-cold", "load-full-cold", "load-full-warm",
                "load-offload-cold"):
        assert seen[key] > 0, (key, seen)
    assert seen["ok"] > 300, seen


def run_with_watchdog(targets: list[Callable[[], None]], timeout: float = 30.0) -> None:
    errors: list[BaseException] = []

    def guard(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # surfaced in the main thread below
                errors.append(e)
        return run

    threads = [threading.Thread(target=guard(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout  # one deadline for all, not `timeout` per thread
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        pytest.fail(f"deadlock: {sum(t.is_alive() for t in threads)} threads still running after {timeout} s")
    if errors:
        raise errors[0]


def test_concurrent_requests_through_the_budget_lock_do_not_deadlock() -> None:
    rng = random.Random(SEEDS[0] + 100)
    costs = catalog(rng)
    names = sorted(costs)
    budget = exact_budget()
    # the scratch owners below hold up to 2 × 64 MiB outside the policy's view: it plans within what is left
    plan_limits = Limits(LIMITS.vram - 128 * 1024**2, LIMITS.ram - 128 * 1024**2, LIMITS.page_locked)
    mgr_lock = threading.Lock()  # the manager's lock; the Budget's own lock nests inside it, never the reverse
    shared: dict[str, dict[str, Resident]] = {"state": {}}
    users: Counter[str] = Counter()  # jobs running per tower: in use while > 0
    stop = threading.Event()
    done = Counter()

    def requester(seed: int) -> None:
        r = random.Random(seed)
        for i in range(100):
            want = tuple(r.sample(names, k=r.choice([1, 2])))
            with mgr_lock:
                state = shared["state"]
                d = decide(Request(want, now=float(i)), state, costs, plan_limits)
                if not d.ok:  # busy: another thread's job holds what this one needs
                    done["refused"] += 1
                    continue
                for act in d.actions:
                    if isinstance(act, Evict):
                        assert users[act.tower] == 0, act
                    budget_apply(budget, act)
                    state = apply(state, act, float(i))
                for t in want:
                    users[t] += 1
                    state[t] = replace(state[t], in_use=True)
                shared["state"] = state
            time.sleep(0.0002)  # the job runs outside the manager's lock
            with mgr_lock:  # the job is done; the tower is idle once its last user lets go
                state = dict(shared["state"])
                for t in want:
                    users[t] -= 1
                    state[t] = replace(state[t], in_use=users[t] > 0)
                shared["state"] = state
                done["requests"] += 1

    def scratch(seed: int) -> None:
        """Another owner reserving and releasing bytes directly (activations, a tower loading)."""
        r = random.Random(seed)
        owner = f"scratch{seed}"
        while not stop.is_set():
            try:
                budget.reserve(owner, r.choice([GPU, CPU]), r.randint(1, 64) * 1024**2)
                budget.commit(owner, GPU) if r.random() < 0.5 else None
            except BudgetError:
                pass
            budget.release(owner)
            time.sleep(0.0002)  # contend, but let the GIL go: spinning threads would only starve the others

    def monitor() -> None:
        while not stop.is_set():
            for dev in budget.snapshot().values():
                assert dev["used"] <= dev["limit"], dev
            time.sleep(0.0002)

    workers = [lambda s=s: requester(s) for s in range(4)]

    def requesters_then_stop() -> None:
        try:
            run_with_watchdog(workers, timeout=20.0)
        finally:
            stop.set()

    run_with_watchdog([requesters_then_stop, monitor, lambda: scratch(100), lambda: scratch(101)], timeout=30.0)
    assert done["requests"] + done["refused"] == 4 * 100, done  # every request got an answer
    assert done["requests"] > 0, done
    for name in names:
        budget.release(name)
    assert budget.used(GPU) == 0 and budget.used(CPU) == 0
