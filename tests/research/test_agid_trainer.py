"""The AGID training loop: same seed -> same weights; an interrupted run (Ctrl-C, or killed outright) resumes from
its last checkpoint and ends exactly where an uninterrupted one does; NaN losses and foreign checkpoints are
clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nexus_engine.research.agid.errors import NaNLossError, ResumeMismatchError, TrainingInterrupted
from nexus_engine.research.agid.trainer import TrainConfig, train

JOB = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from nexus_engine.research.agid.trainer import TrainConfig, train

    def job(seed=0):
        torch.manual_seed(seed)
        w = torch.nn.Parameter(torch.randn(16, 8) * 0.05)
        b = torch.nn.Parameter(torch.zeros(8))
        x_all = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
        y_all = torch.tanh(x_all @ torch.randn(16, 8, generator=torch.Generator().manual_seed(2)))

        def loss(step):
            idx = torch.randint(0, 256, (32,), generator=torch.Generator().manual_seed(1000 + step))
            err = (torch.tanh(x_all[idx] @ w + b) - y_all[idx]).pow(2).mean()
            return err, {"mse": float(err.detach())}
        return {"w": w, "b": b}, loss

    if __name__ == "__main__":
        torch.set_num_threads(1)
        params, loss = job()
        cfg = TrainConfig(steps=int(sys.argv[2]), lr=3e-2, checkpoint_every=3, log_every=100)
        slow = (lambda s: time.sleep(0.2)) if len(sys.argv) > 3 else None
        log = train("toy", params, loss, cfg, checkpoints=Path(sys.argv[1]), fingerprint_="toy", on_step=slow)
        print(repr(float(params["w"].sum())), log.resumed_from)
""")


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _job(tmp: Path) -> object:
    path = tmp / "toyjob.py"
    path.write_text(JOB)
    sys.path.insert(0, str(tmp))
    try:
        import importlib

        import toyjob  # type: ignore[import-not-found]

        return importlib.reload(toyjob)
    finally:
        sys.path.remove(str(tmp))


def _clone(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in params.items()}


def test_same_seed_same_weights_and_loss_goes_down(tmp_path: Path) -> None:
    mod = _job(tmp_path)
    cfg = TrainConfig(steps=30, lr=5e-2, checkpoint_every=5)
    runs = []
    for _ in range(2):
        params, loss = mod.job()
        log = train("toy", params, loss, cfg)
        runs.append((_clone(params), log))
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])
    assert runs[0][1].curve == runs[1][1].curve
    assert runs[0][1].last < runs[0][1].first


def test_interrupt_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    mod = _job(tmp_path)
    cfg = TrainConfig(steps=10, lr=3e-2, checkpoint_every=4)
    params, loss = mod.job()
    straight = train("toy", params, loss, cfg)
    expected = _clone(params)

    def stop_at_6(step: int) -> None:
        if step == 6:
            raise KeyboardInterrupt  # what a Ctrl-C between two steps becomes

    params, loss = mod.job()
    with pytest.raises(TrainingInterrupted) as err:
        train("toy", params, loss, cfg, checkpoints=tmp_path / "ck", fingerprint_="f", on_step=stop_at_6)
    assert err.value.step == 7 and "resume" in err.value.hint  # step 6 finished: 7 steps were saved
    params, loss = mod.job()  # a fresh process: new parameters, only the checkpoint carries the state
    resumed = train("toy", params, loss, cfg, checkpoints=tmp_path / "ck", fingerprint_="f")
    assert resumed.resumed_from == 7
    assert all(torch.equal(params[k], expected[k]) for k in expected)
    assert resumed.curve == straight.curve


def test_killed_process_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    """SIGKILL (no chance to save): the rerun starts at the last periodic checkpoint and ends identical."""
    mod = _job(tmp_path)
    cfg = TrainConfig(steps=12, lr=3e-2, checkpoint_every=3, log_every=100)
    params, loss = mod.job()
    train("toy", params, loss, cfg)
    expected = _clone(params)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "toyjob.py"), str(ck), "12", "slow"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not list(ck.glob("toy-step-000006.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    params, loss = mod.job()  # the rerun
    log = train("toy", params, loss, cfg, checkpoints=ck, fingerprint_="toy")
    assert log.resumed_from in (6, 9)
    assert all(torch.equal(params[k], expected[k]) for k in expected)


def test_nan_loss_stops_before_the_weights_change() -> None:
    w = torch.nn.Parameter(torch.ones(3))

    def loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        value = (w * w).sum() * (float("nan") if step == 3 else 1.0)
        return value, {}

    with pytest.raises(NaNLossError) as err:
        train("nan", {"w": w}, loss, TrainConfig(steps=6, lr=0.1))
    assert err.value.step == 3 and "lr" in err.value.hint
    assert torch.isfinite(w).all()


def test_checkpoint_from_another_configuration_is_refused(tmp_path: Path) -> None:
    mod = _job(tmp_path)
    params, loss = mod.job()
    train("toy", params, loss, TrainConfig(steps=4, checkpoint_every=2), checkpoints=tmp_path, fingerprint_="a")
    params, loss = mod.job()
    with pytest.raises(ResumeMismatchError):
        train("toy", params, loss, TrainConfig(steps=6, checkpoint_every=2), checkpoints=tmp_path, fingerprint_="b")
