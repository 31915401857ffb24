"""`nexus plan`: a whole profile planned for a given VRAM/RAM with the real models.toml, nothing loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexus_engine.cli.main import main
from nexus_engine.config import load_config
from nexus_engine.residency.footprints import MARGIN, FootprintStore
from nexus_engine.towers.base import Footprint

G = 1024**3


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEXUS_CACHE", str(tmp_path / "cache"))  # measured footprints of this test only
    return tmp_path / "cache"


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def rows(plan: dict) -> dict[str, dict]:
    return {r["tower"]: r for r in plan["rows"]}


def test_seed_profile_on_16gb(capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_json(capsys, "--profile", "seed-16gb", "plan", "--vram", "16GiB", "--ram", "32GiB")
    by = rows(plan)
    assert set(load_config().profile("seed-16gb").roles["hearing"]) <= set(by)
    assert plan["vram_limit"] == int(14.5 * G)  # 1.5 GiB kept for the CUDA context and activations
    # the voice loop stays resident on the GPU
    for name in ("parakeet-tdt", "qwen3-tts", "agentcpm-explore"):
        assert (by[name]["placement"], by[name]["where"]) == ("resident", "GPU"), by[name]
    # the 30B MoE as a Q4 GGUF is computed (params × 0.625 × margin), too big for the card: it runs offloaded
    glm = by["glm-4-7-flash"]
    assert glm["size"] == pytest.approx(30e9 * 0.625 * MARGIN, rel=1e-3)
    assert glm["size"] > plan["vram_limit"]
    assert glm["placement"] == "on demand" and glm["where"] == "GPU+RAM (offload)"
    assert 0 < glm["vram"] <= plan["vram_limit"] and 0 < glm["ram"] <= plan["ram_limit"]
    # the 27B dense in int8 cannot fit 16 + 32 GiB; the plan says why and what would
    gemma = by["gemma-scope-2-27b"]
    assert gemma["placement"] == "cannot fit"
    assert "GiB" in gemma["note"] and "As nf4" in gemma["note"]
    # the steady state respects the budget
    resident = [r for r in plan["rows"] if r["placement"] == "resident"]
    warm = [r for r in plan["rows"] if r["placement"] == "warm"]
    assert sum(r["vram"] for r in resident) <= plan["vram_limit"]
    assert sum(r["ram"] for r in resident) + sum(r["size"] for r in warm) <= plan["ram_limit"]
    assert all(r["placement"] in ("resident", "warm", "on demand", "waits", "cannot fit") for r in plan["rows"])


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "seed-16gb", "plan", "--vram", "16GiB", "--ram", "32GiB"]) == 0
    out = capsys.readouterr().out
    assert "nothing is loaded" in out and "14.5 GiB" in out
    assert "CANNOT FIT" in out and "gemma-scope-2-27b" in out
    assert "offloaded:" in out and "resident on the GPU" in out


def test_profile_option_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    before = plan_json(capsys, "--profile", "seed-16gb", "plan", "--vram", "16GiB", "--ram", "32GiB")
    after = plan_json(capsys, "plan", "--profile", "seed-16gb", "--vram", "16GiB", "--ram", "32GiB")
    assert before == after and after["profile"] == "seed-16gb"


def test_a_bigger_machine_fits_more(capsys: pytest.CaptureFixture[str]) -> None:
    by = rows(plan_json(capsys, "--profile", "seed-16gb", "plan", "--vram", "48GiB", "--ram", "128GiB"))
    assert by["gemma-scope-2-27b"]["placement"] != "cannot fit"
    assert by["glm-4-7-flash"]["where"] in ("GPU", "GPU+RAM (offload)")  # declared offload: may stay split
    assert by["personaplex-7b"]["placement"] in ("resident", "warm")  # bf16 14 GiB: fits, kept ready


def test_measured_footprint_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    FootprintStore().record("glm-4-7-flash", "gguf", "gpu", Footprint(vram=12 * G, measured=True))
    glm = rows(plan_json(capsys, "--profile", "seed-16gb", "plan", "--vram", "16GiB", "--ram", "32GiB"))[
        "glm-4-7-flash"]
    assert glm["basis"] == "measured" and glm["size"] == 12 * G
    assert glm["where"] == "GPU" and glm["vram"] == 12 * G  # it fits whole now


def test_starter_profile_runs_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_json(capsys, "--profile", "starter", "plan", "--vram", "0", "--ram", "16GiB")
    assert all(r["placement"] == "resident" and r["where"] == "CPU" for r in plan["rows"])
    assert "imagination" in plan["missing_roles"]


def test_bad_size_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--vram", "lots"]) == 2
    err = capsys.readouterr().err
    assert "--vram" in err and "16GiB" in err


def test_moe_experts_under_bitsandbytes_are_estimated_unquantized() -> None:
    from dataclasses import replace

    from nexus_engine.residency.footprints import estimate

    glm = load_config().towers["glm-4-7-flash"]
    bnb = replace(glm, backend="transformers", quantization="nf4", expert_params=28_000_000_000)
    dense = replace(bnb, expert_params=None)
    # fused experts stay bf16: 2 B/param for 28B of the 30B, not 0.5625
    assert estimate(bnb).gpu_bytes == pytest.approx((2e9 * 0.5625 + 28e9 * 2) * MARGIN, rel=1e-3)
    assert estimate(dense).gpu_bytes == pytest.approx(30e9 * 0.5625 * MARGIN, rel=1e-3)


def test_a_tower_declared_without_params_is_sized_from_its_files(tmp_path: Path) -> None:
    from nexus_engine.config.schema import Source, TowerSpec
    from nexus_engine.residency.footprints import estimate

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.safetensors").write_bytes(b"\0" * 3000)
    (tmp_path / "vae.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / "README.md").write_text("not weights")
    spec = TowerSpec(name="mine", kind="image_gen", backend="diffusers", capabilities=(),
                     source=Source(path=str(tmp_path)), quantization="fp16")
    est = estimate(spec)
    assert est is not None and est.disk_bytes == 4000 and est.gpu_bytes == pytest.approx(4000 * MARGIN, abs=1)
