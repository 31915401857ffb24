"""`nexus train speed`: every AGID stage trains on a random-weight teacher (the GPU run's code, here on `tiny`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nexus_engine.research.agid.speed import spread_removal, train_speed


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def test_spread_removal_leaves_both_ends_and_refuses_too_many() -> None:
    assert spread_removal(36, 9) == [18, 20, 22, 24, 26, 28, 30, 32, 34]
    assert spread_removal(6, 2) == [2, 4]
    with pytest.raises(ValueError, match="cannot spread"):
        spread_removal(6, 3)


def test_every_stage_learns_and_the_student_is_shorter(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    r = train_speed("tiny", "cpu", "fp32", windows=8, seq=64, batch=4, local_steps=30, steps=30, projector_steps=30,
                    work=work)
    assert r["mask"] == {"removed": [2, 4], "kept": 4, "cuts": 2, "recorded_layers": 5}
    # the recorder's float16 residual stream: layers x windows x tokens x hidden
    assert r["activation_bytes"] == 5 * 8 * 64 * 64 * 2
    for stage in ("local", "agid", "projector"):
        assert r[stage]["loss_fell"], (stage, r[stage])
        assert r[stage]["seconds_per_step"] > 0
    assert r["decode"]["teacher"]["layers"] == 6 and r["decode"]["student"]["layers"] == 4
    assert r["decode"]["student"]["weight_bytes"] < r["decode"]["teacher"]["weight_bytes"]
    assert r["bridge_params"] == 2 * (64 + 2 * 64 * 64)  # norm + down + up per cut, rank 64
    assert list(work.iterdir()) == []  # the recording is temporary
    # `nexus train report` puts the run in its speed table
    from nexus_engine.research.agid.report import write_report

    out = tmp_path / "results"
    (out / "gpu").mkdir(parents=True)
    (out / "gpu" / "agid-speed-tiny.json").write_text(json.dumps(r))
    report = write_report(out)["report"].read_text()
    assert "## Training speed at seed scale" in report
    row = next(line for line in report.splitlines() if "| agid |" in line)
    assert "tiny (6 → 4 layers) | cpu, fp32 | 4 × 64" in row and f"{r['agid']['loss_last5']:.4f}" in row


def test_cli_writes_the_numbers(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, "-m", "nexus_engine.cli.main", "train", "speed", "--arch", "tiny", "--dtype",
                    "fp32", "--windows", "4", "--seq", "32", "--local-steps", "3", "--steps", "3",
                    "--projector-steps", "2", "--json", str(out)], check=True, capture_output=True, timeout=300)
    d = json.loads(out.read_text())
    assert d["arch"] == "tiny" and d["device"] == "cpu" and d["projector"]["steps"] == 2
