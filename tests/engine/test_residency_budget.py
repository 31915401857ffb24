"""Byte accounting (Budget), footprint estimates, and the measured-footprint store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.errors import BudgetError
from nexus_engine.residency import budget as budget_mod
from nexus_engine.residency.budget import Budget, DeviceBudget, default_reserve
from nexus_engine.residency.footprints import MARGIN, FootprintStore, cost_for, estimate
from nexus_engine.residency.policy import CPU, GPU
from nexus_engine.towers.base import Footprint

G = 1024**3
M = 1024**2


def small() -> Budget:
    return Budget([DeviceBudget(GPU, 10 * G, reserve=2 * G), DeviceBudget(CPU, 20 * G, reserve=4 * G)])


# ------------------------------------------------------------------------------------------------ budget
def test_reserve_commit_release() -> None:
    b = small()
    b.reserve("chat", GPU, 3 * G)
    assert b.used(GPU) == 3 * G and b.snapshot()[GPU]["pending"] == {"chat": 3 * G}
    b.commit("chat", GPU, 2 * G)  # measured smaller than reserved
    assert b.used(GPU) == 2 * G and b.snapshot()[GPU]["committed"] == {"chat": 2 * G}
    assert b.release("chat") == 2 * G
    assert b.used(GPU) == 0


def test_over_the_limit_raises_with_the_numbers_and_changes_nothing() -> None:
    b = small()
    b.reserve("vlm", GPU, 5 * G)
    b.commit("vlm", GPU)
    before = b.snapshot()
    with pytest.raises(BudgetError) as e:
        b.reserve("chat", GPU, 4 * G)  # limit 8 GiB, 5 held
    msg = e.value.message
    assert "4.0 GiB" in msg and "5.0 GiB of 8.0 GiB" in msg and "vlm" in msg and "3.0 GiB available" in msg
    assert e.value.hint
    assert b.snapshot() == before


def test_commit_of_a_larger_measurement_that_does_not_fit_raises() -> None:
    b = small()
    b.reserve("a", GPU, 6 * G)
    b.reserve("b", GPU, 2 * G)
    with pytest.raises(BudgetError):
        b.commit("a", GPU, 7 * G)  # 1 GiB more than reserved, and nothing is left
    assert b.snapshot()[GPU]["pending"] == {"a": 6 * G, "b": 2 * G}  # unchanged: the manager unloads "a"


def test_resize_grows_with_a_check_and_shrinks_freely() -> None:
    b = small()
    b.resize("warm", CPU, 10 * G)
    b.resize("warm", CPU, 4 * G)
    assert b.used(CPU) == 4 * G
    with pytest.raises(BudgetError):
        b.resize("warm", CPU, 17 * G)  # limit 16 GiB
    b.resize("warm", CPU, 0)
    assert b.snapshot()[CPU]["committed"] == {}


def test_memory_held_by_other_processes_is_respected() -> None:
    free = {GPU: 3 * G, CPU: 100 * G}
    b = Budget([DeviceBudget(GPU, 10 * G, reserve=2 * G, headroom=1 * G), DeviceBudget(CPU, 20 * G)],
               probe=lambda d: free[d])
    assert b.available(GPU) == 2 * G  # limit says 8, but only 3 free physically, minus 1 headroom
    with pytest.raises(BudgetError) as e:
        b.reserve("vlm", GPU, 5 * G)
    assert "outside this budget" in e.value.message
    b.reserve("asr", GPU, 1 * G)
    assert b.available(GPU) == 1 * G  # pending bytes are not yet missing from the probe's answer
    assert b.limits().vram == 2 * G  # held + available: what the policy may plan with


def test_limits_and_snapshot_are_json_safe() -> None:
    b = small()
    b.reserve("x", CPU, G)
    lim = b.limits()
    assert (lim.vram, lim.ram, lim.page_locked) == (8 * G, 16 * G, 8 * G)
    json.dumps(b.snapshot())


def test_unknown_device_and_negative_sizes_are_errors() -> None:
    b = small()
    with pytest.raises(BudgetError):
        b.reserve("x", "cuda:1", 1)
    with pytest.raises(BudgetError):
        b.reserve("x", GPU, -1)


def test_default_reserves() -> None:
    assert default_reserve(GPU, 16 * G) == (int(1.5 * G), G)  # CUDA context 512 MiB + 1 GiB of activations
    assert default_reserve(GPU, 80 * G)[0] == 512 * M + int(80 * G * 0.06)
    assert default_reserve(CPU, 32 * G)[0] == int(32 * G * 0.2)
    assert default_reserve(CPU, 8 * G)[0] == 2 * G  # at least 2 GiB for the OS
    assert default_reserve(CPU, 256 * G)[0] == 8 * G  # at most 8
    assert default_reserve(GPU, 0) == (0, 0)
    b = Budget.fixed(16 * G, 32 * G)
    assert b.limit(GPU) == int(14.5 * G)


def test_for_machine_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_mod, "cuda_memory", lambda: None)
    b = Budget.for_machine()
    assert b.limit(GPU) == 0 and b.limit(CPU) > 0
    assert b.available(CPU) <= b.limit(CPU)


# -------------------------------------------------------------------------------------------- footprints
def spec(name: str = "t", params: str | int | None = 4_000_000_000, quant: str = "nf4",
         backend: str = "transformers", **kw) -> TowerSpec:
    return TowerSpec(name=name, kind=kw.pop("kind", "llm"), backend=backend, capabilities=(),
                     source=Source(hub="org/x"), quantization=quant, params=params, **kw)  # type: ignore[arg-type]


def test_estimate_is_params_times_bytes_times_margin() -> None:
    est = estimate(spec(params=30_000_000_000, quant="nf4", dtype="bf16"))
    assert est is not None
    assert est.gpu_bytes == pytest.approx(30e9 * 0.5625 * MARGIN, rel=1e-6)
    # transformers keeps CPU-offloaded bitsandbytes layers unquantized (bf16)
    assert est.split_ram_bytes == pytest.approx(30e9 * 2 * MARGIN, rel=1e-6)
    assert est.disk_bytes == 60e9  # a bf16 checkpoint, quantized while loading
    assert estimate(spec(params=None)) is None


def test_diffusers_offload_keeps_components_quantized() -> None:
    cost = cost_for(spec(quant="nf4", backend="diffusers", kind="image_gen"))
    assert cost is not None and cost.offload == "model"
    assert cost.ram_bytes == cost.gpu_bytes and cost.offload_min_gpu < cost.gpu_bytes


def test_measured_footprint_is_persisted_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "fp.json"
    s = spec("chat")
    estimated = cost_for(s, FootprintStore(path))
    assert estimated is not None and not estimated.measured
    FootprintStore(path).record("chat", "nf4", "gpu", Footprint(ram=100 * M, vram=3 * G, measured=True))
    again = FootprintStore(path)  # a new process reads the file
    fp = again.get("chat", "nf4", "gpu")
    assert fp is not None and fp.vram == 3 * G and fp.measured
    measured = cost_for(s, again)
    assert measured is not None and measured.measured and measured.gpu_bytes == 3 * G
    # the unquantized split form is corrected by the same ratio as the measurement
    ratio = 3 * G / estimated.gpu_bytes
    assert measured.split_ram_bytes == pytest.approx(estimated.split_ram_bytes * ratio, rel=1e-6)
    assert again.get("chat", "int8", "gpu") is None  # keyed by quantization
    assert again.get("chat", "nf4", "cpu") is None  # and by device


def test_store_survives_a_damaged_file_and_writes_atomically(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    path = folder / "fp.json"
    path.write_text("{not json")
    store = FootprintStore(path)
    assert store.get("x", "nf4", "gpu") is None
    store.record("x", "nf4", "gpu", Footprint(vram=G))
    store.record("y", "bf16", "cpu", Footprint(ram=G))
    assert set(json.loads(path.read_text())) == {"x|nf4|gpu", "y|bf16|cpu"}
    assert [p.name for p in folder.iterdir()] == ["fp.json"]  # no temp files left behind


def test_store_defaults_to_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEXUS_CACHE", str(tmp_path))
    assert FootprintStore().path == tmp_path / "footprints.json"
