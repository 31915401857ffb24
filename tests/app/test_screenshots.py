"""A real window (xcb) under Xvfb: tests/app/screens.py drives the app on the starter pack in a subprocess (its
QApplication must use the xcb platform, this process's is offscreen) and saves PNGs of the main views as test
artifacts. Skipped cleanly without Xvfb or without the COCO images.

NEXUS_UPDATE_SCREENSHOTS=1 also copies them to docs/screenshots/ (for the README and docs/app.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from PySide6.QtGui import QImage

from nexus_engine import paths
from tests.app.conftest import record

DOCS = paths.REPO_ROOT / "docs" / "screenshots"
SHOTS = ("chat.png", "monitor.png", "monitor-events.png", "generate.png", "voice.png")


def colors_in(image: QImage) -> int:
    small = image.scaled(160, 100)
    return len({small.pixel(x, y) for x in range(small.width()) for y in range(small.height())})


def test_real_window_screenshots(xvfb_display: str, coco_images: list[Path], artifacts: Path,
                                 tmp_path: Path) -> None:
    out = artifacts / "screens"
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "models.toml").write_text("[towers.smollm2-chat.options]\nn_threads = 1\n")
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb", "NEXUS_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "tests.app.screens", str(out), str(coco_images[0])],
                          cwd=paths.REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    record(artifacts, "screenshots", {"folder": str(out), "report": report})
    assert report["platform"] == "xcb"
    assert report["chat"]["status"] == "done" and report["chat"]["answer"] and report["chat"]["thumbnails"] == 1
    # routed live: the picture question to the vision tower, the plain question to the chat model
    assert report["monitor"]["routes"] == [["efficientnet-lite0"], ["smollm2-chat"]]
    chat_events = [e for e in report["monitor"]["events"] if e[1] == "smollm2-chat"]
    assert [e[0] for e in chat_events] == ["load", "unload", "load"]
    assert all(e[2] > 50 * 2**20 and e[3] > 0 for e in chat_events)
    # the attached image was looked at first (starter perception: labels and OCR; docs/vision.md)
    assert {"efficientnet-lite0", "rapidocr"} <= {e[1] for e in report["monitor"]["events"] if e[0] == "load"}
    # photographed mid-run from the worker's own Progress messages, then finished into the gallery
    gen = report["generation"]
    assert gen["progress"] == f"step {gen['shot_step']}/20" and 3 <= gen["shot_step"] < 20, gen
    assert gen["gallery"] == 1 and gen["finished"].startswith("finished"), gen
    for name in SHOTS:
        image = QImage(str(out / name))
        assert (image.width(), image.height()) == (1280, 800), name
        assert colors_in(image) > 40, f"{name} looks blank"
    if os.environ.get("NEXUS_UPDATE_SCREENSHOTS") == "1":  # 256-color PNGs: a third of the size, same look
        DOCS.mkdir(parents=True, exist_ok=True)
        for name in SHOTS:
            with Image.open(out / name) as im:
                im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(DOCS / name, optimize=True)
