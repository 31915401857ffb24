"""The app's voice panel driving a real call (real worker, PulseAudio devices): states, the live transcript,
the spoken turn stored in the app's own history file, a clear error state without a microphone, and a call
that starts again after it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6.QtWidgets")

from nexus_engine.history import History
from nexus_engine.voice.wer import wer
from tests.voice.conftest import Pulse, clips


@pytest.fixture
def qt_engine(qtbot: Any, voice_client: Any) -> Iterator[Any]:
    """The app's QtEngine around the session's worker (closing it would stop that worker: only detach)."""
    from app.engine_client import QtEngine

    eng = QtEngine(client=voice_client, poll_s=5.0)
    eng.start()
    qtbot.waitUntil(lambda: voice_client.alive, timeout=60_000)
    yield eng
    eng._stop.set()
    eng._health.stop()
    voice_client.listener = None


def test_the_panel_runs_a_call_and_says_plainly_when_it_cannot(qtbot: Any, qt_engine: Any, pulse: Pulse,
                                                                tmp_path: Path) -> None:
    from app.widgets.voice import VoicePanel

    history_file = tmp_path / "app-history.sqlite3"
    History(history_file).close()
    panel = VoicePanel(mic_name="no-such-microphone", hands_free=True)
    qtbot.addWidget(panel)
    updated: list[int] = []
    panel.conversation_updated.connect(updated.append)
    panel.attach(qt_engine, lambda: {"persona": "", "conversation_id": None, "history": str(history_file)})
    panel.call_button.click()
    qtbot.waitUntil(lambda: panel.state == "error", timeout=60_000)
    assert "no-such-microphone" in panel.state_label.text() and panel.call_button.text() == "Start call"

    panel.mic_name = ""  # the system's microphone: the PulseAudio virtual one
    panel.call_button.click()
    qtbot.waitUntil(lambda: panel.state == "listening", timeout=90_000)
    assert panel.call_button.text() == "Hang up" and panel.mute.isEnabled()
    try:
        _, clip, ref = clips()[1]
        pulse.play(clip).wait(30)
        qtbot.waitUntil(lambda: "nexus:" in panel.transcript.toPlainText(), timeout=60_000)
        said = panel.transcript.toPlainText().splitlines()[0]
        assert said.startswith("you: ") and wer(ref, said[5:]) <= 0.25
        qtbot.waitUntil(lambda: bool(updated), timeout=30_000)
    finally:  # hang up even when an assertion failed: the session's worker serves one call at a time
        panel.call_button.click()
        qtbot.waitUntil(lambda: panel.state == "idle" and panel.call_id is None, timeout=30_000)
    with History(history_file) as h:
        msgs = h.messages(updated[0])
    assert msgs[1].role == "user" and msgs[1].meta.get("source") == "voice" and msgs[2].role == "assistant"
