"""The generation panel: what the real worker answers on the starter pack (no generation tower: the panel says so
and shows the models.toml lines), bad input, and the progress / preview / gallery path driven by the protocol's
own Progress and Done messages."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.widgets.generation import GenerationPanel, outputs
from nexus_engine import paths
from nexus_engine.config import load_config
from nexus_engine.protocol import Done, Progress, Started


def test_starter_pack_has_no_generation_tower_and_the_engine_agrees(window: Any, qtbot: Any) -> None:
    panel = window.generation
    window.tabs.setCurrentWidget(panel)
    assert panel.notice.isVisible()
    assert "No image generation tower is installed" in panel.notice_text.text()
    snippet = panel.snippet.toPlainText()
    assert '[profiles.starter.roles]\nimagination = "sd3-medium"' in snippet
    assert str(paths.user_models_toml()) in snippet
    panel.video_kind.setChecked(True)
    assert 'video = "svd-xt-1-1"' in panel.snippet.toPlainText()
    panel.image_kind.setChecked(True)

    panel.prompt.setPlainText("a red cube on a table")
    qtbot.mouseClick(panel.generate_button, Qt.MouseButton.LeftButton)
    assert panel.current is not None and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.current is None, timeout=30_000)  # the worker's typed error, not a hang
    assert panel.progress.format() == "failed"
    assert "cannot generate" in panel.notice_text.text() and panel.notice.isVisible()
    assert panel.generate_button.isEnabled()


def test_bad_generation_input_is_refused_inline(qtbot: Any, tmp_path: Path) -> None:
    panel = GenerationPanel(load_config(), "starter", tmp_path / "models.toml")
    qtbot.addWidget(panel)
    sent: list[Any] = []
    panel.generate_requested.connect(sent.append)
    panel.generate_button.click()
    assert "prompt is empty" in panel.error.text() and not panel.error.isHidden()
    panel.prompt.setPlainText("a cat")
    panel.video_kind.setChecked(True)
    panel.generate_button.click()
    assert "choose an input image" in panel.error.text()
    panel.input_image.setText(str(tmp_path / "nope.png"))
    panel.generate_button.click()
    assert "does not exist" in panel.error.text() and sent == []


def test_progress_preview_and_gallery(qtbot: Any, tmp_path: Path, coco_images: list[Path]) -> None:
    panel = GenerationPanel(load_config(), "starter", tmp_path / "models.toml")
    qtbot.addWidget(panel)
    panel.show()
    sent: list[Any] = []
    panel.generate_requested.connect(sent.append)
    panel.prompt.setPlainText("a harbour at night")
    panel.steps.setValue(20)
    panel.seed.setValue(7)
    panel.generate_button.click()
    (req,) = sent
    assert (req.kind, req.steps, req.seed, req.width, req.preview_every) == ("image", 20, 7, 512, 1)
    out = shutil.copy(coco_images[0], tmp_path / "out.jpg")
    panel.on_event(Started(id=req.id))
    panel.on_event(Progress(id=req.id, step=7, total=20, eta_s=3.4, preview=str(coco_images[1])))
    assert panel.progress.value() == 7 and panel.progress.format() == "step 7/20"
    assert "about 3.4 s left" in panel.progress_text.text()
    qtbot.waitUntil(lambda: not panel.preview.pixmap().isNull(), timeout=5000)
    panel.on_event(Done(id="someone-else", stats={"path": "/nope.png"}))  # other requests are ignored
    panel.on_event(Done(id=req.id, stats={"path": str(out), "total_ms": 2500}))
    assert panel.progress.format() == "done" and panel.gallery.count() == 1
    qtbot.waitUntil(lambda: not panel.gallery.item(0).icon().isNull(), timeout=5000)
    assert panel.copy_button.isEnabled()
    panel.copy_button.click()
    qtbot.waitUntil(lambda: (m := QApplication.clipboard().mimeData()) is not None and m.hasUrls(), timeout=5000)
    assert QApplication.clipboard().mimeData().urls()[0].toLocalFile() == str(out)
    assert outputs({"paths": ["a.png", "b.png"], "video": "c.mp4"}) == ["a.png", "b.png", "c.mp4"]
