"""The residency policy, table-driven: one catalog of towers, one row per situation, expected actions."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nexus_engine.residency.policy import (
    CPU,
    GPU,
    Bandwidth,
    Evict,
    Limits,
    Load,
    Params,
    Request,
    Resident,
    TowerCost,
    apply,
    decide,
    used,
)

G = 1024**3
NOW = 10_000.0
RECENT = NOW - 10  # inside keep_interactive_s
OLD = NOW - 1_000  # idle longer than keep_interactive_s


def _c(name: str, gb: float, latency: str = "interactive", device: str = "gpu", **kw) -> TowerCost:
    size = int(gb * G)
    ram, split = (int(kw.pop(k, gb) * G) for k in ("ram", "split"))
    return TowerCost(name, latency, device, gpu_bytes=size, ram_bytes=ram, split_ram_bytes=split,
                     disk_bytes=size, **kw)


COSTS = {c.name: c for c in [
    _c("asr", 1), _c("tts", 2), _c("chat", 4), _c("vlm", 5),
    _c("a", 3), _c("b", 3), _c("c", 3),
    _c("vid", 6, "background"),
    _c("img", 4, "background", "offload", offload="model", offload_min_gpu=2 * G),
    _c("big", 20, split=24, offload="split", offload_min_gpu=2 * G),
    _c("huge", 30),
    _c("cpullm", 3, device="cpu"),
]}
LIMITS = Limits(vram=10 * G, ram=16 * G, page_locked=8 * G)


def hot(name: str, last: float = OLD, **kw) -> Resident:
    return Resident(name, "hot", vram=COSTS[name].gpu_bytes, last_used=last, **kw)


@dataclass
class Case:
    id: str
    state: list[Resident]
    want: tuple[str, ...]
    evict: dict[str, str] = field(default_factory=dict)  # tower -> "warm" | "cold"
    load: dict[str, str] = field(default_factory=dict)  # tower -> "full" | "offload"
    refused: dict[str, bool] = field(default_factory=dict)  # tower -> retry
    preempt: tuple[str, ...] = ()
    latency: str | None = None
    params: Params = field(default_factory=Params)
    reason_has: str = ""


CASES = [
    Case("cold load into free VRAM", [], ("chat",), load={"chat": "full"}),
    Case("already hot: nothing to do", [hot("chat")], ("chat",)),
    Case("voice stays resident: a background job evicts the idle interactive tower, not the voice",
         [hot("asr", RECENT), hot("tts", RECENT), hot("vlm", OLD)], ("vid",),
         evict={"vlm": "warm"}, load={"vid": "full"}),
    Case("voice stays resident: a background job waits rather than evict recent interactive towers",
         [hot("asr", RECENT), hot("tts", RECENT), hot("vlm", RECENT)], ("vid",),
         refused={"vid": True}, reason_has="recently used"),
    Case("a background job runs offloaded in the VRAM the voice leaves",
         [hot("asr", RECENT), hot("tts", RECENT), hot("chat", RECENT)], ("img",), load={"img": "offload"}),
    Case("interactive request: background towers go first, even if more recently used",
         [hot("asr", OLD), hot("vid", RECENT)], ("chat",), evict={"vid": "warm"}, load={"chat": "full"}),
    Case("LRU among equals", [hot("a", 10.0), hot("b", 5.0), hot("c", 20.0)], ("tts",),
         evict={"b": "warm"}, load={"tts": "full"}),
    Case("cheap to bring back goes before least recently used",
         [hot("asr", 900.0), hot("tts", 950.0), hot("vlm", 100.0)], ("chat",),
         evict={"asr": "warm", "tts": "warm"}, load={"chat": "full"}, params=Params(cost_quantum_ms=100)),
    Case("pins respected: the LRU tower is pinned, the next one goes",
         [hot("a", 10.0), hot("b", 5.0, pinned=True), hot("c", 20.0)], ("tts",),
         evict={"a": "warm"}, load={"tts": "full"}),
    Case("everything pinned: refused, retry later, says who holds it",
         [hot("a", pinned=True), hot("b", pinned=True), hot("c", pinned=True)], ("tts",),
         refused={"tts": True}, reason_has="pinned"),
    Case("an in-use background job is preempted, never evicted",
         [hot("vid", RECENT, in_use=True), hot("asr")], ("vlm",), preempt=("vid",)),
    Case("a background request never preempts another job",
         [hot("vid", RECENT, in_use=True), hot("asr")], ("vlm",), latency="background",
         refused={"vlm": True}, reason_has="in use"),
    Case("in-use interactive towers are never evicted",
         [hot("chat", RECENT, in_use=True), hot("vlm", RECENT, in_use=True)], ("tts",),
         refused={"tts": True}, reason_has="in use"),
    Case("larger than the VRAM budget: runs offloaded, split by what RAM can hold",
         [], ("big",), load={"big": "offload"}),
    Case("larger than VRAM and cannot offload: refused for good, with the numbers",
         [], ("huge",), refused={"huge": False}, reason_has="30.0 GiB"),
    Case("all or nothing: one tower that cannot fit cancels the whole plan",
         [], ("chat", "huge"), refused={"huge": False}),
    Case("several towers: the whole-GPU ones are placed before the offloaded one",
         [], ("big", "asr"), load={"asr": "full", "big": "offload"}),
    Case("a CPU tower loads into RAM", [], ("cpullm",), load={"cpullm": "full"}),
    Case("unknown tower: refused", [], ("nope",), refused={"nope": False}, reason_has="size unknown"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_table(case: Case) -> None:
    state = {r.name: r for r in case.state}
    d = decide(Request(case.want, latency=case.latency, now=NOW), state, COSTS, LIMITS, case.params)
    evicts = {a.tower: a.to for a in d.actions if isinstance(a, Evict)}
    loads = {a.tower: a.mode for a in d.actions if isinstance(a, Load)}
    assert evicts == case.evict, d.reason
    assert loads == case.load, d.reason
    assert {r.tower: r.retry for r in d.refused} == case.refused, d.reason
    assert d.preempt == case.preempt, d.reason
    assert d.ok == (not case.refused and not case.preempt)
    if case.refused or case.preempt:
        assert d.actions == ()  # nothing half-done
    if case.reason_has:
        assert case.reason_has in d.reason
    _check_steps(state, d.actions)


def _check_steps(state: dict[str, Resident], actions: tuple) -> None:
    """Every intermediate state stays inside the limits; busy and pinned towers are never touched."""
    for act in actions:
        if isinstance(act, Evict):
            assert not state[act.tower].in_use and not state[act.tower].pinned
        state = apply(state, act, NOW)
        vram, ram = used(state)
        assert vram <= LIMITS.vram and ram <= LIMITS.ram, act


def test_offload_split_takes_the_vram_and_puts_the_rest_in_ram() -> None:
    d = decide(Request(("big",), now=NOW), {}, COSTS, LIMITS)
    (load,) = d.actions
    assert (load.device, load.mode, load.vram) == (GPU, "offload", LIMITS.vram)
    assert load.ram == 12 * G  # half the layers on the GPU -> half of the 24 GiB RAM form
    assert load.source == "cold"


def test_offload_refused_when_ram_cannot_hold_the_rest() -> None:
    tight = Limits(vram=10 * G, ram=8 * G, page_locked=4 * G)
    d = decide(Request(("big",), now=NOW), {}, COSTS, tight)
    (refusal,) = d.refused
    assert not refusal.retry
    assert "must stay in VRAM" in refusal.reason and "10.0 GiB VRAM" in refusal.reason


def test_evicted_towers_go_warm_while_ram_allows_then_cold() -> None:
    # RAM already holds 12 GiB of CPU towers: only 4 GiB left for warm copies
    ram_full = Limits(vram=10 * G, ram=16 * G, page_locked=16 * G)
    state = {"filler": Resident("filler", "hot", ram=12 * G, last_used=NOW),
             **{r.name: r for r in (hot("tts", 1.0), hot("vlm", 2.0))}}
    costs = {**COSTS, "filler": _c("filler", 12, device="cpu")}
    d = decide(Request(("vid",), latency="background", now=NOW), state, costs, ram_full)
    tiers = {a.tower: a.to for a in d.actions if isinstance(a, Evict)}
    assert tiers == {"tts": "warm", "vlm": "cold"}, d.reason  # 2 GiB fits the spare RAM, 5 GiB does not
    assert d.actions[0].to == "cold"  # cold evictions come first: they only free bytes


def test_warm_copies_are_page_locked_only_within_their_share() -> None:
    little_locked = Limits(vram=10 * G, ram=16 * G, page_locked=3 * G)
    state = {r.name: r for r in (hot("tts", 1.0), hot("vlm", 2.0))}
    d = decide(Request(("vid",), now=NOW), state, COSTS, little_locked)
    locked = {a.tower: a.page_locked for a in d.actions if isinstance(a, Evict)}
    assert locked == {"vlm": False, "tts": True} or locked == {"tts": True, "vlm": False}
    slow = next(a for a in d.actions if isinstance(a, Evict) and a.tower == "vlm")
    fast = next(a for a in d.actions if isinstance(a, Evict) and a.tower == "tts")
    assert slow.reload_ms > fast.reload_ms * 2  # pageable copies come back several times slower


def test_a_warm_tower_comes_back_from_ram_and_frees_its_copy() -> None:
    state = {"chat": Resident("chat", "warm", ram=4 * G, last_used=OLD, page_locked=True)}
    d = decide(Request(("chat",), now=NOW), state, COSTS, LIMITS)
    (load,) = d.actions
    assert load.source == "warm"
    assert load.est_ms == pytest.approx(4 * G / 24e9 * 1e3, rel=0.01)
    after = apply(state, load, NOW)
    assert after["chat"].tier == "hot" and used(after) == (4 * G, 0)


def test_reload_costs_follow_the_bandwidth_parameters() -> None:
    fast_disk = Params(bandwidth=Bandwidth(disk_gbps=20.0, cold_overhead_ms=0))
    d = decide(Request(("chat",), now=NOW), {}, COSTS, LIMITS, fast_disk)
    assert d.actions[0].est_ms == pytest.approx(4 * G / 20e9 * 1e3, rel=0.01)


def test_no_gpu_runs_everything_on_the_cpu() -> None:
    d = decide(Request(("chat",), now=NOW), {}, COSTS, Limits(vram=0, ram=16 * G))
    (load,) = d.actions
    assert (load.device, load.vram, load.ram) == (CPU, 0, 4 * G)


def test_preempted_job_yields_then_the_request_goes_through() -> None:
    state = {r.name: r for r in (hot("vid", RECENT, in_use=True), hot("asr"))}
    first = decide(Request(("vlm",), now=NOW), state, COSTS, LIMITS)
    assert first.preempt == ("vid",)
    state["vid"] = Resident("vid", "hot", vram=6 * G, last_used=RECENT)  # the job reached a step boundary
    second = decide(Request(("vlm",), now=NOW), state, COSTS, LIMITS)
    assert second.ok and any(isinstance(a, Evict) and a.tower == "vid" for a in second.actions)


def test_decide_is_pure() -> None:
    state = {r.name: r for r in (hot("a", 10.0), hot("b", 5.0), hot("c", 20.0))}
    snapshot = dict(state)
    first = decide(Request(("tts",), now=NOW), state, COSTS, LIMITS)
    assert state == snapshot
    assert decide(Request(("tts",), now=NOW), state, COSTS, LIMITS) == first
