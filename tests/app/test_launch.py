"""`nexus-app`, started the way the README says (./setup.sh app runs it), opens its window on the starter pack, the
engine says hello, and it quits cleanly: under a real X server (Xvfb) when there is one, else offscreen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nexus_engine import paths


def test_nexus_app_starts_the_engine_and_quits_cleanly(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "nexus-app"  # the console script pip installed
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app"]
    env = {**os.environ, "NEXUS_HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    if shutil.which("Xvfb"):
        env.update(DISPLAY=request.getfixturevalue("xvfb_display"), QT_QPA_PLATFORM="xcb")
    proc = subprocess.run([*command, "--quit-after", "6"], cwd=paths.REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "data" / "logs" / "app.log").read_text()
    assert "engine ready: engine ready · profile starter" in log, log[-2000:]
    assert "Traceback" not in log and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "config" / "app-settings.json").exists()  # the window saved its settings on close
