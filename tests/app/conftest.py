"""Fixtures for the app tests: Qt offscreen, ONE real engine worker (starter pack) shared by the whole session,
a fresh main window (own SQLite history, own settings file) per test, the COCO images, an artifacts folder.

The worker is shared because starting one and loading the starter model costs ~1 s of the 2 CI cores per test;
tests that need a particular tower state (the monitor test) set it themselves with Load/UnloadTower requests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6.QtWidgets")

COCO = Path(os.environ.get("NEXUS_COCO", "/work/shared/data/coco"))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests leave screenshots and measurements ($NEXUS_ARTIFACTS, else a pytest temp folder)."""
    path = Path(os.environ.get("NEXUS_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(artifacts: Path, key: str, value: Any) -> None:
    """Add one measurement to artifacts/app-measurements.json (and print it, so `pytest -s` shows it)."""
    path = artifacts / "app-measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"[measure] {key} = {value}")


@pytest.fixture
def coco_images() -> list[Path]:
    if not COCO.is_dir():
        pytest.skip(f"{COCO} is not here (the shared COCO sample images)")
    images = sorted(COCO.glob("*.jpg"))
    if len(images) < 2:
        pytest.skip(f"{COCO} has fewer than 2 JPEG images")
    return images


@pytest.fixture(scope="session")
def engine_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NEXUS_HOME of the shared worker: the starter model on one thread (two would fight the test process and
    the UI thread for the 2 CI cores, and that would show up as UI stalls that are not the app's)."""
    home = tmp_path_factory.mktemp("engine-home")
    (home / "config").mkdir()
    (home / "config" / "models.toml").write_text("[towers.smollm2-chat.options]\nn_threads = 1\n")
    return home


@pytest.fixture(scope="session")
def engine(qapp: Any, engine_home: Path) -> Iterator[Any]:
    from app.engine_client import READY, RESTARTED, QtEngine
    from nexus_engine import paths
    from nexus_engine.client import EngineClient

    client = EngineClient(config_files=[paths.SHIPPED_MODELS_TOML, engine_home / "config" / "models.toml"],
                          env={"NEXUS_HOME": str(engine_home)})
    eng = QtEngine(client=client, poll_s=0.5)
    eng.start()
    wait_for(qapp, lambda: eng.state in (READY, RESTARTED), 60, "the engine worker to say hello")
    yield eng
    eng.close()


def wait_for(qapp: Any, condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Process Qt events until `condition` holds (qtbot.waitUntil needs a test's qtbot; fixtures use this)."""
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)


@pytest.fixture
def make_window(qtbot: Any, engine: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Build a MainWindow on the shared engine with its own history and settings under tmp_path."""
    from app.main_window import MainWindow
    from app.settings import AppSettings
    from nexus_engine.config import load_config
    from nexus_engine.history import History

    histories: list[Any] = []

    def make(**settings: Any) -> Any:
        history = History(tmp_path / "data" / "history.sqlite3")
        histories.append(history)
        values = {"data_dir": str(tmp_path / "data"), "max_tokens": 48, **settings}
        window = MainWindow(engine, history, AppSettings(**values), load_config(),
                            settings_file=tmp_path / "app-settings.json")
        qtbot.addWidget(window)
        window.show()
        return window

    yield make
    for h in histories:
        h.close()


@pytest.fixture
def window(make_window: Callable[..., Any]) -> Any:
    return make_window()


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """A private X server for real-window tests; skips the test when Xvfb is not installed."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    # -displayfd: Xvfb picks a free display number itself and writes it once it accepts connections
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    number = proc.stdout.readline().strip()
    if not number.isdigit():
        proc.kill()
        pytest.fail(f"Xvfb did not start: {proc.stderr.read() if proc.stderr else ''}")
    yield f":{number}"
    proc.terminate()
    proc.wait(5)
