"""`nexus bench stress`: randomized chat and generate requests against the real residency manager, from several
threads, with a memory budget well below the sum of the towers.

Real parts: ResidencyManager, Budget, policy, warm tier and FootprintStore, with tiny Llama towers built from
configs (testing.TinyTorchTower) whose "GPU" is a second buffer in RAM (gpu_device="cpu") and whose physical
memory is a SimulatedGpu: a load that does not fit raises torch.OutOfMemoryError worded like CUDA's, so an OOM the
budget failed to prevent would show. Chat requests are interactive (one or two towers, one forward pass);
generate requests are background jobs (one tower, several steps, yielding at step boundaries when asked).

Figures: completed / refused (a BudgetError with its reason) / errors, OOMs (goal 0), deadlocks (requests still
running when the watchdog fires; goal 0), peak accounted bytes per device against the budget (never above:
`PeakBudget` records the used bytes after every reserve/commit/resize), and residency changes per request.
"""

from __future__ import annotations

import os
import platform
import queue
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus_engine.errors import BudgetError
from nexus_engine.protocol import Message, TowerEvent
from nexus_engine.residency.budget import Budget, DeviceBudget
from nexus_engine.residency.footprints import FootprintStore
from nexus_engine.residency.manager import ResidencyManager
from nexus_engine.residency.policy import CPU, GPU, Params
from nexus_engine.testing import SimulatedGpu, TinyTorchTower, residency_config, tiny_llama_params, tower_spec

SHAPES = ((32, 1), (32, 2), (48, 2), (64, 2), (64, 3))  # (hidden, layers): towers of different sizes


class PeakBudget(Budget):
    """The real Budget, plus the highest used bytes per device seen after any change (an observer, not a fake)."""

    def __init__(self, devices: list[DeviceBudget]) -> None:
        super().__init__(devices)
        self.peak = {d.name: 0 for d in devices}

    def _seen(self) -> None:
        for name in self.peak:
            self.peak[name] = max(self.peak[name], self.used(name))

    def reserve(self, owner: str, device: str, nbytes: int) -> None:
        super().reserve(owner, device, nbytes)
        self._seen()

    def commit(self, owner: str, device: str, nbytes: int | None = None) -> None:
        super().commit(owner, device, nbytes)
        self._seen()

    def resize(self, owner: str, device: str, nbytes: int) -> None:
        super().resize(owner, device, nbytes)
        self._seen()


@dataclass
class Job:
    kind: str  # chat | generate
    towers: tuple[str, ...]
    steps: int


def _towers(n: int) -> dict[str, tuple[Any, dict[str, int]]]:
    """n tower specs, every third one a background (generation) tower, with their tiny-model shapes."""
    out = {}
    for i in range(n):
        hidden, layers = SHAPES[i % len(SHAPES)]
        latency = "background" if i % 3 == 2 else "interactive"
        spec = tower_spec(f"t{i}", params=tiny_llama_params(hidden, layers), latency=latency)
        out[spec.name] = (spec, {"hidden": hidden, "layers": layers})
    return out


def _jobs(n: int, specs: dict[str, Any], rng: random.Random) -> list[Job]:
    chat = sorted(k for k, s in specs.items() if s.latency == "interactive")
    gen = sorted(k for k, s in specs.items() if s.latency == "background")
    jobs = []
    for _ in range(n):
        if rng.random() < 0.3:
            jobs.append(Job("generate", (rng.choice(gen),), rng.randint(3, 8)))
        else:
            jobs.append(Job("chat", tuple(rng.sample(chat, k=rng.choice([1, 1, 2]))), 1))
    return jobs


def run(requests: int = 1000, threads: int = 4, towers: int = 9, seed: int = 0, watchdog_s: float = 60.0,
        budget_share: float = 0.4) -> dict[str, Any]:
    """`budget_share`: the GPU budget as a share of the sum of the towers' measured sizes (RAM gets 1.5x that,
    for warm copies)."""
    import torch

    torch.set_num_threads(1)  # many tiny forwards from several threads: one intra-op thread each is fastest
    rng = random.Random(seed)
    built = _towers(towers)
    sizes = {}
    for name, (spec, shape) in built.items():  # measured once, so the budget is a known share of the total
        probe = TinyTorchTower(spec, **shape)
        probe.load()
        sizes[name] = probe.footprint().vram
    total = sum(sizes.values())
    vram, ram = int(total * budget_share), int(total * budget_share * 1.5)
    assert max(sizes.values()) <= vram, "every tower must fit the budget alone"
    budget = PeakBudget([DeviceBudget(GPU, vram), DeviceBudget(CPU, ram)])
    sim = SimulatedGpu(total=vram)  # physical memory == the budget: an unplanned byte more is an OOM
    sim.budget = budget
    instances = {n: TinyTorchTower(spec, **shape, sim=sim) for n, (spec, shape) in built.items()}
    events: Counter[str] = Counter()
    lock = threading.Lock()

    def emit(msg: Message) -> None:
        if isinstance(msg, TowerEvent):
            with lock:
                events[msg.action] += 1

    with tempfile.TemporaryDirectory() as tmp:
        manager = ResidencyManager(residency_config(*(s for s, _ in built.values())), budget,
                                   FootprintStore(Path(tmp) / "footprints.json"), emit,
                                   build=lambda spec: instances[spec.name], gpu_device="cpu", preempt_wait_s=10,
                                   params=Params(keep_interactive_s=1.0))  # a fast run: 1 s is "recently used"
        result = _drive(manager, instances, _jobs(requests, {n: s for n, (s, _) in built.items()}, rng),
                        threads, watchdog_s)
    result.update({
        "bench": "stress", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "requests": requests, "threads": threads, "towers": towers, "seed": seed,
        "tower_bytes_total": total, "budget": {"vram": vram, "ram": ram},
        "peak": {"vram": budget.peak[GPU], "ram": budget.peak[CPU]},
        "peak_within_budget": budget.peak[GPU] <= vram and budget.peak[CPU] <= ram,
        "ooms": events["oom"], "events": dict(events),
    })
    swaps = events["swap_in"] + events["swap_out"]
    changes = swaps + events["load"] + events["evict"] + events["unload"]
    result["mean_swaps_per_request"] = round(swaps / requests, 3)
    result["mean_residency_changes_per_request"] = round(changes / requests, 3)
    result["goals"] = {"peak <= budget": result["peak_within_budget"], "ooms == 0": events["oom"] == 0,
                       "deadlocks == 0": result["deadlocks"] == 0, "errors == 0": result["errors"] == 0}
    return result


def _drive(manager: ResidencyManager, towers: dict[str, TinyTorchTower], jobs: list[Job], threads: int,
           watchdog_s: float) -> dict[str, Any]:
    todo: queue.Queue[Job] = queue.Queue()
    for j in jobs:
        todo.put(j)
    counts: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    waits: list[float] = []
    running: dict[int, float] = {}  # thread id -> when its current request started
    errors: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        me = threading.get_ident()
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                running[me] = time.monotonic()
            try:
                t0 = time.perf_counter()
                latency = "background" if job.kind == "generate" else None
                with manager.acquire(job.towers, latency, wait_s=2.0) as lease:
                    with lock:
                        waits.append((time.perf_counter() - t0) * 1000)
                    done = 0
                    for _ in range(job.steps):  # a generation yields at step boundaries when asked
                        if lease.should_yield():
                            break
                        for name in job.towers:
                            lease.tower(name).logits()
                        done += 1
                with lock:
                    counts["completed"] += 1
                    counts["preempted"] += done < job.steps
            except BudgetError as e:
                with lock:
                    counts["refused"] += 1
                    refusals[e.message.split(":")[0][:80]] += 1
                    if not e.message.strip():
                        errors.append("a refusal without a message")
            except Exception as e:  # anything else is a bug the stress run exists to find
                with lock:
                    counts["errors"] += 1
                    errors.append(f"{type(e).__name__}: {e}"[:300])
            finally:
                with lock:
                    running.pop(me, None)

    t0 = time.monotonic()
    pool = [threading.Thread(target=work, name=f"stress-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    deadline = t0 + watchdog_s * max(1, len(jobs) // 100)  # the whole run; each request gets watchdog_s below
    stuck = 0
    while any(t.is_alive() for t in pool):
        time.sleep(0.05)
        now = time.monotonic()
        with lock:
            stuck = sum(now - started > watchdog_s for started in running.values())
        if stuck or now > deadline:
            break
    alive = sum(t.is_alive() for t in pool)
    return {"completed": counts["completed"], "refused": counts["refused"], "preempted": counts["preempted"],
            "errors": counts["errors"], "error_examples": errors[:5], "refusal_reasons": dict(refusals.most_common(5)),
            "deadlocks": max(stuck, alive), "seconds": round(time.monotonic() - t0, 2),
            "acquire_ms": {"p50": round(statistics.median(waits), 2) if waits else None,
                           "p95": round(_pct(waits, 95), 2) if waits else None}}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]
