"""The first window, offscreen, against the real worker: a message goes in, a streamed answer comes out."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6.QtWidgets")


def test_window_streams_an_answer(qtbot) -> None:
    from app.engine_bridge import EngineBridge
    from app.main_window import MainWindow

    bridge = EngineBridge()
    window = MainWindow(bridge)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: window.status.text() == "engine ready", timeout=60_000)
        window.input.setText("Name three primary colors.")
        window.send_button.click()
        assert window.stop_button.isEnabled()
        qtbot.waitUntil(lambda: window.current is None, timeout=120_000)
        assert "smollm2-chat" in window.status.text()
        transcript = window.view.toPlainText()
        assert "You: Name three primary colors." in transcript
        assert len(window.answer) > 5 and window.answer in transcript
    finally:
        bridge.close()
