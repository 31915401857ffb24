"""The residency manager with real parts: tiny Llama towers built from configs, a real Budget, the real policy.

The budget's GPU line is simulated by a second buffer in RAM (gpu_device="cpu"), so warm swaps, evictions,
preemption and out-of-memory handling all run on a CPU-only machine.
"""

from __future__ import annotations

import threading
import time
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest
import torch

from nexus_engine.engine import Engine
from nexus_engine.errors import BudgetError
from nexus_engine.protocol import (
    Done,
    Error,
    LoadTower,
    ResidencyEvent,
    Shutdown,
    Status,
    StatusRequest,
    TowerEvent,
    decode,
)
from nexus_engine.residency.budget import Budget, DeviceBudget
from nexus_engine.residency.footprints import FootprintStore
from nexus_engine.residency.manager import ResidencyManager
from nexus_engine.residency.policy import CPU, GPU
from nexus_engine.testing import SimulatedGpu, TinyTorchTower, residency_config, tiny_llama_params, tower_spec
from nexus_engine.worker import Worker

PARAMS = tiny_llama_params()  # hidden 32, 2 layers: ~91 KB in fp32


def _measured_size() -> int:
    tower = TinyTorchTower(tower_spec("probe", params=PARAMS))
    tower.load()
    return tower.footprint().vram


SIZE = _measured_size()  # parameters and buffers, as a load measures them
MB = 1_000_000


class Harness:
    """A manager over named tiny towers; records every event with the time it arrived."""

    def __init__(self, tmp: Path, vram: int, ram: int, latency: dict[str, str] | None = None,
                 budget: Budget | None = None, **towers: dict[str, Any]) -> None:
        latency = latency or {}
        specs = [tower_spec(n, params=kw.pop("params", PARAMS), latency=latency.get(n, "interactive"))
                 for n, kw in towers.items()]
        self.towers = {s.name: TinyTorchTower(s, **towers[s.name]) for s in specs}
        self.built: list[str] = []
        self.events: list[tuple[float, TowerEvent]] = []
        self.snapshots: list[dict[str, Any]] = []  # a ResidencyEvent follows every TowerEvent
        self.budget = budget or Budget.fixed(vram=vram, ram=ram, vram_reserve=0, ram_reserve=0)
        self.manager = ResidencyManager(residency_config(*specs), self.budget, FootprintStore(tmp / "fp.json"),
                                        self._emit, build=self._build, gpu_device="cpu", preempt_wait_s=5)

    def _build(self, spec: Any) -> TinyTorchTower:
        self.built.append(spec.name)
        return self.towers[spec.name]

    def _emit(self, msg: Any) -> None:
        if isinstance(msg, ResidencyEvent):
            self.snapshots.append(msg.snapshot)
        else:
            self.events.append((time.monotonic(), msg))

    def actions(self) -> list[tuple[str, str]]:
        return [(e.action, e.tower) for _, e in self.events]

    def event(self, action: str, tower: str) -> TowerEvent:
        return next(e for _, e in self.events if (e.action, e.tower) == (action, tower))

    def tier(self, name: str) -> str:
        return self.manager.snapshot()["towers"][name]["tier"]


def test_first_acquire_loads_lazily_then_reuses(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=4 * SIZE, ram=4 * SIZE, a={})
    assert h.built == [] and h.manager.snapshot()["towers"] == {}
    with h.manager.acquire(["a"]) as lease:
        assert lease.info["a"]["origin"] == "config" and h.towers["a"].loaded
        assert h.manager.snapshot()["towers"]["a"]["in_use"]
    load = h.event("load", "a")
    assert load.bytes == SIZE and load.ms > 0
    snap = h.manager.snapshot()
    assert snap["towers"]["a"] == snap["towers"]["a"] | {"tier": "hot", "vram": SIZE, "in_use": False}
    assert snap["budget"][GPU]["committed"] == {"a": SIZE}
    with h.manager.acquire(["a"]) as lease:
        assert lease.info["a"]["origin"] == "resident"
    assert h.actions() == [("load", "a")] and h.towers["a"].loads == 1
    assert FootprintStore(tmp_path / "fp.json").get("a", "fp32", "gpu").vram == SIZE  # measured, remembered


def test_warm_swap_round_trip_keeps_outputs_and_reports_bytes_and_ms(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=int(1.5 * SIZE), ram=8 * SIZE, a={}, b={})
    with h.manager.acquire(["a"]) as lease:
        before = lease.tower("a").logits()
    with h.manager.acquire(["b"]):  # only one fits: a goes warm
        assert h.tier("a") == "warm" and h.tier("b") == "hot"
    out = h.event("swap_out", "a")
    assert out.bytes >= SIZE and out.ms >= 0 and "copied to" in out.detail
    assert h.budget.snapshot()[CPU]["committed"]["a"] == out.bytes and "a" not in h.budget.snapshot()[GPU]["committed"]
    with h.manager.acquire(["a"]) as lease:  # back by one copy, b pushed out
        assert lease.info["a"]["origin"] == "warm"
        assert torch.equal(lease.tower("a").logits(), before)
    swap_in = h.event("swap_in", "a")
    assert swap_in.bytes == out.bytes and swap_in.ms >= 0 and "GB/s" in swap_in.detail
    assert h.towers["a"].loads == 1  # never reloaded from its source
    assert h.manager.snapshot()["towers"]["a"]["kept_ram"] == out.bytes  # the host copy stays for the next swap-out
    with h.manager.acquire(["b"]):
        pass
    assert "kept copy" in [e for _, e in h.events if e.action == "swap_out" and e.tower == "a"][-1].detail
    assert h.actions() == [("load", "a"), ("swap_out", "a"), ("load", "b"), ("swap_out", "b"), ("swap_in", "a"),
                           ("swap_out", "a"), ("swap_in", "b")]


def test_kept_host_copies_are_dropped_before_a_tower_goes_cold(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=int(1.5 * SIZE), ram=int(2.6 * SIZE), a={}, b={}, c={})
    for name in ("a", "b", "a"):  # a ends hot with its host copy kept; b warm
        with h.manager.acquire([name]):
            pass
    assert h.manager.snapshot()["towers"]["a"]["kept_ram"] > 0 and h.tier("b") == "warm"
    with h.manager.acquire(["c"]):  # RAM holds b's copy and a's kept one: a's must go, not a itself
        pass
    assert h.tier("a") == "warm" and h.tier("b") == "warm" and h.tier("c") == "hot"
    last = [e for _, e in h.events if (e.action, e.tower) == ("swap_out", "a")][-1]
    assert "weights copied to" in last.detail  # the kept copy was dropped, so it was copied again
    assert h.budget.used(CPU) <= int(2.6 * SIZE)


def test_without_room_for_a_warm_copy_or_a_torch_module_eviction_unloads(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=int(1.5 * SIZE), ram=SIZE // 2, a={}, b={}, c={"opaque": True})
    with h.manager.acquire(["a"]):
        pass
    with h.manager.acquire(["b"]):  # no RAM for a's copy
        pass
    assert h.tier("a") == "cold" and not h.towers["a"].loaded
    assert h.event("evict", "a").bytes == SIZE
    h2 = Harness(tmp_path / "2", vram=int(1.5 * SIZE), ram=8 * SIZE, c={"opaque": True}, b={})
    with h2.manager.acquire(["c"]):
        pass
    with h2.manager.acquire(["b"]):  # c is not a torch module (llama.cpp, onnx): only hot or cold
        pass
    assert h2.tier("c") == "cold" and "not a single-device torch module" in h2.event("evict", "c").detail
    assert h2.budget.snapshot()[CPU]["committed"] == {}


def test_refusal_names_the_bytes_and_changes_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=4 * SIZE, ram=4 * SIZE, a={}, huge={"params": 10 * PARAMS})
    with h.manager.acquire(["a"]):
        pass
    with pytest.raises(BudgetError, match=r"huge needs .*VRAM and its backend cannot offload; budget: "):
        h.manager.acquire(["huge"])
    refuse = h.event("refuse", "huge")
    assert refuse.bytes > 4 * SIZE and "budget" in refuse.detail
    assert h.built == ["a"] and h.tier("a") == "hot"
    assert h.budget.snapshot()[GPU]["committed"] == {"a": SIZE} and h.budget.snapshot()[GPU]["pending"] == {}


def test_a_tower_in_use_is_never_evicted(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=int(1.5 * SIZE), ram=8 * SIZE, a={}, b={})
    lease = h.manager.acquire(["a"])
    with pytest.raises(BudgetError, match=r"held by a \(in use"):
        h.manager.acquire(["b"])
    assert h.tier("a") == "hot" and ("swap_out", "a") not in h.actions()
    # a request that may wait gets the memory once the run ends
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(h.manager.acquire(["b"], wait_s=10)))
    waiter.start()
    time.sleep(0.2)
    assert not got and h.tier("a") == "hot"
    t_release = time.monotonic()
    lease.release()
    waiter.join(10)
    assert got and h.tier("b") == "hot"
    got[0].release()
    t_out = next(t for t, e in h.events if (e.action, e.tower) == ("swap_out", "a"))
    assert t_out >= t_release


def test_a_waiting_request_does_not_hold_up_others(tmp_path: Path) -> None:
    big = tiny_llama_params(hidden=64)  # ~3.6x a small tower
    h = Harness(tmp_path, vram=4 * SIZE, ram=16 * SIZE, a={}, c={}, b={"hidden": 64, "params": big})
    lease_a = h.manager.acquire(["a"])
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(h.manager.acquire(["b"], wait_s=10)))
    waiter.start()
    time.sleep(0.2)  # b waits for a's run to end
    t0 = time.monotonic()
    with h.manager.acquire(["c"]):  # fits next to a: served while b waits
        assert time.monotonic() - t0 < 2 and not got
    lease_a.release()
    waiter.join(10)
    assert got and h.tier("b") == "hot" and {h.tier("a"), h.tier("c")} == {"warm"}
    got[0].release()


def test_interactive_request_preempts_a_background_job_at_a_step_boundary(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=int(1.5 * SIZE), ram=8 * SIZE, latency={"render": "background"}, render={}, chat={})
    bg = h.manager.acquire(["render"])
    assert bg.latency == "background" and not bg.should_yield()
    steps: list[int] = []
    stopped: list[float] = []

    def job() -> None:
        with bg:
            steps.append(h.towers["render"].run(bg, steps=2000, step_s=0.005))  # ~10 s unless asked to yield
            stopped.append(time.monotonic())  # still holding the lease

    runner = threading.Thread(target=job)
    runner.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    with h.manager.acquire(["chat"]) as lease:
        assert lease.info["chat"]["origin"] == "config"
    runner.join(5)
    assert bg.should_yield() and 0 < steps[0] < 2000
    assert time.monotonic() - t0 < 3  # it yielded at a step, not after the whole job
    times = {(e.action, e.tower): t for t, e in h.events}
    assert times[("preempt", "render")] < stopped[0] < times[("swap_out", "render")] < times[("load", "chat")]
    assert "chat needs the memory" in h.event("preempt", "render").detail


def test_background_job_that_never_yields_is_a_bounded_refusal(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=int(1.5 * SIZE), ram=8 * SIZE, latency={"render": "background"}, render={}, chat={})
    h.manager.preempt_wait_s = 0.3
    with h.manager.acquire(["render"]) as bg:  # holds on without checking should_yield
        with pytest.raises(BudgetError, match=r"did not yield within 0\.3 s"):
            h.manager.acquire(["chat"])
        assert bg.should_yield() and h.tier("render") == "hot"


def _simulated(tmp: Path, true_b: int, probe: bool) -> Harness:
    """a (20 MB) and b (estimated 10 MB, really `true_b`) on a simulated 100 MB GPU, 60 MB held elsewhere."""
    sim = SimulatedGpu(total=100 * MB, external=60 * MB)
    vram = 100 * MB if probe else 1000 * MB  # without a probe the budget believes in a much bigger card
    budget = Budget([DeviceBudget(GPU, vram), DeviceBudget(CPU, 1000 * MB)], probe=sim.probe if probe else None)
    sim.budget = budget
    return Harness(tmp, 0, 0, budget=budget, a={"params": 20 * MB // 44 * 10, "sim": sim, "true_bytes": 20 * MB},
                   b={"params": 10 * MB // 44 * 10, "sim": sim, "true_bytes": true_b})


def test_out_of_memory_corrects_the_size_and_retries(tmp_path: Path) -> None:
    h = _simulated(tmp_path, true_b=30 * MB, probe=True)
    with h.manager.acquire(["a"]):
        pass
    with h.manager.acquire(["b"]) as lease:  # its estimate fits next to a; the load finds out it does not
        assert lease.tower("b").loaded
    oom = h.event("oom", "b")
    assert 29 * MB < oom.bytes <= 30 * MB and "Tried to allocate" in oom.detail
    assert h.actions() == [("load", "a"), ("oom", "b"), ("swap_out", "a"), ("load", "b")]
    assert FootprintStore(tmp_path / "fp.json").get("b", "fp32", "gpu").vram == 30 * MB
    assert h.manager.snapshot()["oom_margin"][GPU] > 0  # the limits shrank after the surprise


def test_out_of_memory_twice_is_a_clear_refusal_and_the_worker_keeps_serving(tmp_path: Path) -> None:
    h = _simulated(tmp_path, true_b=200 * MB, probe=False)
    engine = Engine(h.manager.config, residency=h.manager)
    ours, theirs = Pipe()
    worker = threading.Thread(target=Worker(theirs, engine).run, daemon=True)
    worker.start()

    def ask(msg: Any) -> list[Any]:
        ours.send_bytes(msg.encode())
        got = []
        while not got or not isinstance(got[-1], Done | Error | Status):
            got.append(decode(ours.recv_bytes()))
        return got

    ask(StatusRequest())  # skip the Hello
    assert isinstance(ask(LoadTower(tower="a"))[-1], Done)
    events = ask(LoadTower(tower="b"))
    err = events[-1]
    assert isinstance(err, Error) and err.code == "out_of_budget"
    assert "b ran out of GPU memory while loading, twice; it needs at least" in err.message
    # the budget believed b fits next to a even at its corrected size: nothing was evicted, the second
    # failure is the refusal
    assert [e.action for e in events if isinstance(e, TowerEvent)] == ["oom", "refuse"]
    status = ask(StatusRequest())[-1]
    assert status.towers["b"]["tier"] == "cold" and not h.towers["b"].loaded
    gpu = status.residency["budget"][GPU]
    assert "b" not in gpu["committed"] and gpu["pending"] == {}
    assert isinstance(ask(LoadTower(tower="a"))[-1], Done) and h.tier("a") == "hot"  # still serving
    ours.send_bytes(Shutdown().encode())
    worker.join(5)
    assert not worker.is_alive()


def test_machine_budget_honours_the_app_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from nexus_engine.residency.budget import machine_budget

    monkeypatch.setenv("NEXUS_RAM_BUDGET", "8GiB")
    snap = machine_budget().snapshot()
    assert snap[CPU]["capacity"] == 8 * 1024**3 and snap[CPU]["limit"] < snap[CPU]["capacity"]
    monkeypatch.setenv("NEXUS_RAM_BUDGET", "lots")  # unreadable: ignored, the machine's RAM is used
    assert machine_budget().snapshot()[CPU]["capacity"] > 0


def test_every_tower_event_is_followed_by_a_snapshot_with_real_bytes(tmp_path: Path) -> None:
    h = Harness(tmp_path, vram=4 * SIZE, ram=4 * SIZE, a={})
    with h.manager.acquire(("a",)):
        pass
    assert len(h.snapshots) == len(h.events) >= 1
    assert h.snapshots[-1]["towers"]["a"]["vram"] == SIZE
