"""Drive the real window (xcb, under the Xvfb display the test started) and photograph the main views:

  chat.png        a question about a dropped COCO image, answered by the starter model
  monitor.png     the tower monitor after two routed requests (an unload between them, so both a load and an
                  unload show with their bytes and milliseconds)
  generate.png    the generation panel mid-progress: a tiny random-weight SD3 pipeline (built from configs by
                  nexus_engine.testing), declared as the starter profile's imagination tower in models.toml and
                  run by the real worker
  voice.png       the voice panel (meter or "no microphone")

    python -m tests.app.screens OUT_DIR COCO_IMAGE     (prints a JSON report on its last line)

Screenshots come from QScreen.grabWindow(0): the X server's framebuffer, i.e. what a user would see.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication

from app import theme
from app.engine_client import READY, QtEngine
from app.main_window import MainWindow
from app.settings import AppSettings
from nexus_engine import paths
from nexus_engine.config import load_config
from nexus_engine.history import History
from nexus_engine.protocol import UnloadTower
from nexus_engine.testing import starter_roles, tower_toml
from tests.app.qt_helpers import drop

STEPS = 20  # each step sends a decoded preview: seconds in all, long enough to photograph mid-run


def wait(app: QApplication, cond: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)


def settle(app: QApplication, seconds: float = 0.4) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)


def shoot(app: QApplication, window: MainWindow, path: Path) -> None:
    settle(app)
    image = window.screen().grabWindow(0)
    if not image.save(str(path), "PNG"):
        raise RuntimeError(f"could not save {path}")


def ask(app: QApplication, window: MainWindow, text: str) -> Any:
    window.composer.edit.setPlainText(text)
    window.composer.submit()
    wait(app, lambda: not window.controller.busy, 90, f"the answer to {text!r}")
    return window.chat.messages[-1]


def declare_tiny_pipeline(folder: Path) -> subprocess.Popen[bytes]:
    """Map the starter profile's imagination role to a tiny SD3 folder in the user's models.toml (before the
    worker starts, so it reads the same file), and build that folder in a child process: importing torch and
    saving the pipeline overlap with the chat part, and this process stays torch-free like the app."""
    override = paths.user_models_toml()
    text = override.read_text() if override.exists() else ""
    override.write_text(text + "\n" + tower_toml("tiny-sd3", "image_gen", folder, "imagination", device="cpu",
                                                  backend="diffusers") + starter_roles(imagination="tiny-sd3"))
    code = "import sys; from pathlib import Path; from nexus_engine.testing import tiny_sd3_dir; " \
           "tiny_sd3_dir(Path(sys.argv[1]))"
    return subprocess.Popen([sys.executable, "-c", code, str(folder)])


def main(out: Path, image: Path) -> dict[str, Any]:
    for old in ("data", "generations"):  # a fresh history every run: the screenshots show this run only
        shutil.rmtree(out / old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    pipeline = out / "tiny-sd3"
    builder = declare_tiny_pipeline(pipeline)
    app = QApplication(sys.argv[:1])
    theme.apply(app, "dark")
    settings = AppSettings(data_dir=str(out / "data"), max_tokens=60)
    history = History(settings.history_path())
    engine = QtEngine(poll_s=0.5)
    window = MainWindow(engine, history, settings, load_config())
    window.setGeometry(0, 0, 1280, 800)
    window.show()
    engine.start()
    wait(app, lambda: engine.state == READY, 60, "the engine")
    report: dict[str, Any] = {"platform": app.platformName()}

    # 1. chat with an image, dropped the way a file manager drops it
    drop(window.composer.edit, [image])
    wait(app, lambda: window.composer.chips and window.composer.pending == 0, 20, "the thumbnail")
    answer = ask(app, window, "What is in this picture? Answer in one sentence.")
    report["chat"] = {"answer": answer.text, "status": answer.status, "info": answer.info.text(),
                      "thumbnails": window.chat.messages[-2].thumbs.count() - 1}
    shoot(app, window, out / "chat.png")

    # 2. the monitor after two routed requests, with an unload between them
    engine.submit(UnloadTower(tower="smollm2-chat"))
    wait(app, lambda: window.monitor.state_of("smollm2-chat") == "cold", 20, "the unload")
    ask(app, window, "Name three colors of the rainbow.")
    window.tabs.setCurrentWidget(window.monitor)
    wait(app, lambda: len(window.monitor.samples) >= 6, 20, "memory samples")
    table = window.monitor.table
    table.selectRow(next(i for i in range(table.rowCount()) if table.item(i, 0).text() == "smollm2-chat"))
    wait(app, lambda: "[towers.smollm2-chat]" in window.monitor.details.toPlainText(), 10, "the tower details")
    window.monitor.logs.setCurrentIndex(1)
    settle(app, 0.3)
    shoot(app, window, out / "monitor-events.png")
    window.monitor.logs.setCurrentIndex(0)
    model = window.monitor.model
    report["monitor"] = {"routes": [r.towers for r in model.routes],
                         "events": [(e.action, e.tower, e.bytes, round(e.ms, 1)) for e in model.events],
                         "ram_used": model.budget.ram_used, "source": model.budget.source}
    shoot(app, window, out / "monitor.png")

    # 3. generation mid-progress: the panel's own request, answered by the worker on the tiny pipeline
    panel = window.generation
    window.tabs.setCurrentWidget(panel)
    wait(app, lambda: builder.poll() is not None, 120, "the tiny pipeline to be saved")
    if builder.returncode != 0:
        raise RuntimeError(f"building the tiny pipeline failed ({builder.returncode})")
    panel.refresh_availability()
    wait(app, lambda: panel.notice.isHidden(), 10, "the panel to see the declared tower")
    panel.prompt.setPlainText("a lighthouse on a cliff at dusk")
    panel.negative.setText("blurry")
    panel.size.setCurrentText("64×64")
    panel.steps.setValue(STEPS)
    panel.seed.setValue(7)
    panel.generate_button.click()
    # every step sends a VAE preview (decoded and saved as PNG), so the tiny pipeline takes seconds, not ms
    wait(app, lambda: panel.progress.value() >= 3 and not panel.preview.pixmap().isNull(), 120,
         "a few steps and a preview")
    image = window.screen().grabWindow(0)  # at once: no settle, the run goes on meanwhile
    report["generation"] = {"progress": panel.progress.format(), "text": panel.progress_text.text(),
                            "shot_step": panel.progress.value()}
    if not image.save(str(out / "generate.png"), "PNG"):
        raise RuntimeError("could not save generate.png")
    wait(app, lambda: panel.gallery.count() == 1, 120, "the finished image")
    report["generation"]["gallery"] = panel.gallery.count()
    report["generation"]["finished"] = panel.progress_text.text()

    # 4. voice
    window.tabs.setCurrentWidget(window.voice)
    wait(app, lambda: window.voice.available is not None, 10, "the microphone check")
    report["voice"] = window.voice.device_label.text()
    shoot(app, window, out / "voice.png")

    window.close()
    engine.close()
    history.close()
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
