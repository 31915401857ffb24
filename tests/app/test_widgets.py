"""Widget and helper logic that needs no engine: Markdown segments while streaming, code blocks with Copy, the
info line, settings saved between runs, the settings dialog, the voice panel's microphone state, themes, the
pool-thread helper, and the Qt binding's reference counting."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication, QWidget

from app import settings as app_settings
from app import theme
from app.markdown import Segment, split_segments
from app.qt_check import binding_problem
from app.settings import AppSettings
from app.tasks import run_async
from app.widgets.chat import CodeBlock, MessageWidget, format_info
from app.widgets.settings import SettingsDialog
from app.widgets.voice import VoicePanel
from nexus_engine.config import load_config

ANSWER = "Here it is:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nThat **adds** them."


def test_the_qt_binding_keeps_reference_counts(qapp: Any) -> None:
    assert binding_problem() is None


def test_segments_of_a_streaming_answer() -> None:
    assert split_segments(ANSWER) == [Segment("text", "Here it is:"),
                                      Segment("code", "def add(a, b):\n    return a + b", "python"),
                                      Segment("text", "That **adds** them.")]
    half = ANSWER[: ANSWER.index("return")]
    assert split_segments(half)[-1] == Segment("code", "def add(a, b):\n    ", "python", closed=False)
    assert split_segments("~~~\nx\n~~~~\nafter") == [Segment("code", "x", ""), Segment("text", "after")]
    assert split_segments("````\n```\ninner\n```\n````") == [Segment("code", "```\ninner\n```", "")]
    assert split_segments("") == []


def test_message_widget_streams_and_copies_code(qtbot: Any) -> None:
    bubble = MessageWidget("assistant")
    qtbot.addWidget(bubble)
    for end in range(1, len(ANSWER) + 1, 7):  # as the stream would deliver it
        bubble.set_text(ANSWER[:end])
    bubble.set_text(ANSWER)
    kinds = [type(w).__name__ for w in bubble.segment_widgets]
    assert kinds == ["QLabel", "CodeBlock", "QLabel"]
    code = bubble.segment_widgets[1]
    assert isinstance(code, CodeBlock) and code.lang.text() == "python"
    code.copy_button.click()
    assert QApplication.clipboard().text() == "def add(a, b):\n    return a + b"
    first = bubble.segment_widgets[0]
    bubble.set_text(ANSWER + " More.")
    assert bubble.segment_widgets[0] is first  # unchanged segments are not rebuilt
    user = MessageWidget("user", "**not bold** `x`")
    qtbot.addWidget(user)
    assert user.segment_widgets[0].text() == "**not bold** `x`"


def test_info_line() -> None:
    stats = {"tower": "smollm2-chat", "tokens": 40, "decode_tok_s": 61.2, "ttft_ms": 212.0, "total_ms": 900}
    assert format_info(stats) == "smollm2-chat · 40 tokens · 61 tok/s · first token 212 ms · 0.9 s"
    assert format_info(stats, ["router-pick"]).startswith("router-pick + smollm2-chat")
    assert format_info({}) == ""
    heard = {**stats, "towers": ["whisper-base", "smollm2-chat"], "heard": [{"path": "/a.wav", "text": "hi"}]}
    assert format_info(heard).startswith("whisper-base + smollm2-chat · audio via transcript · 40 tokens")
    two = {**heard, "heard": heard["heard"] * 2, "consolidation": "text"}
    assert "image via text notes · 2 audio files via transcripts" in format_info(two)


def test_settings_round_trip_and_damage(tmp_path: Path) -> None:
    path = tmp_path / "app-settings.json"
    assert app_settings.load(path) == AppSettings()
    s = AppSettings(profile="seed-16gb", vram_budget="12GiB", gpu="cuda:0", persona="Be brief.", theme="light",
                    max_tokens=99, data_dir=str(tmp_path / "d"))
    app_settings.save(s, path)
    assert app_settings.load(path) == s
    assert s.history_path() == tmp_path / "d" / "history.sqlite3"
    raw = json.loads(path.read_text())
    raw.update(max_tokens="lots", theme=3, unknown=1)
    path.write_text(json.dumps(raw))
    again = app_settings.load(path)
    assert again.max_tokens == 512 and again.theme == "dark" and again.persona == "Be brief."
    path.write_text("{ not json")
    assert app_settings.load(path) == AppSettings()
    assert (tmp_path / "app-settings.json.bad").read_text() == "{ not json"
    assert app_settings.engine_env(s) == {"NEXUS_VRAM_BUDGET": str(12 * 2**30), "CUDA_VISIBLE_DEVICES": "0"}
    assert app_settings.engine_env(AppSettings(gpu="cpu")) == {"CUDA_VISIBLE_DEVICES": ""}
    assert app_settings.check_budget("12 parsecs") and app_settings.check_budget("24GiB") is None


def test_settings_dialog_validates_and_returns_a_copy(qtbot: Any, tmp_path: Path) -> None:
    original = AppSettings()
    dialog = SettingsDialog(original, load_config(), tmp_path / "models.toml")
    qtbot.addWidget(dialog)
    assert [dialog.profile.itemText(i) for i in range(dialog.profile.count())][:2] == ["starter", "seed-16gb"]
    dialog.vram.setText("lots")
    dialog._on_ok()
    assert not dialog.error.isHidden() and "VRAM budget" in dialog.error.text() and not dialog.result()
    dialog.vram.setText("8GiB")
    dialog.profile.setCurrentIndex(1)
    dialog.persona.setPlainText("You are terse.")
    dialog.theme.setCurrentText("light")
    dialog._on_ok()
    assert dialog.result()
    new = dialog.result_settings()
    assert (new.profile, new.vram_budget, new.persona, new.theme) == ("seed-16gb", "8GiB", "You are terse.", "light")
    assert original == AppSettings()
    qtbot.waitUntil(lambda: "found" in dialog.devices_note.text() or "unavailable" in dialog.devices_note.text(),
                    timeout=10_000)


def test_voice_panel_reports_the_microphone_honestly(qtbot: Any) -> None:
    panel = VoicePanel()
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitUntil(lambda: panel.available is not None, timeout=10_000)
    if panel.available:
        qtbot.waitUntil(lambda: panel.mic.open_now and panel._meter_timer.isActive(), timeout=10_000)
        panel.ptt.pressed.emit()
        assert panel.state == "listening"
        panel.ptt.released.emit()
        assert panel.state == "idle"
    else:  # no input device (CI) or no PortAudio: said plainly, push-to-talk does not pretend to listen
        assert "No microphone" in panel.device_label.text() or "unavailable" in panel.device_label.text()
        assert panel.retry.isVisible() and not panel.meter.isEnabled()
        panel.ptt.pressed.emit()
        assert panel.state == "idle"
    toggles: list[tuple[bool, bool]] = []
    panel.toggles_changed.connect(lambda *a: toggles.append(a))
    panel.hands_free.setChecked(True)
    panel.barge_in.setChecked(False)
    assert toggles[-1] == (True, False)
    panel.set_state("speaking")
    panel.append_transcript("you", "hello")
    assert panel.state_label.text() == "Speaking" and "you: hello" in panel.transcript.toPlainText()
    from nexus_engine.protocol import VoiceState

    panel.call_id = "c1"  # a call's first state names its towers: the panel shows the chain it runs
    panel.on_event(VoiceState(id="c1", state="listening", info={"towers": {"asr": "whisper-base", "tts": "piper-joe",
                                                                             "vad": "silero"}, "aec": "speexdsp"}))
    assert panel.pipeline.text() == "whisper-base ▸ the persona chat model ▸ piper-joe · echo cancellation: speexdsp"
    panel.on_event(VoiceState(id="c1", state="listening", info={"towers": {"asr": "parakeet", "tts": "qwen3-tts",
                                                                             "duplex": "personaplex-7b"}}))
    assert "personaplex-7b answers speech with speech" in panel.pipeline.text()
    panel.on_event(VoiceState(id="other", state="listening", info={"towers": {"asr": "x", "tts": "y"}}))
    assert "personaplex" in panel.pipeline.text()  # another call's events are not drawn
    panel.call_id = None
    panel.shutdown()


def test_theme_toggle_is_saved(window: Any, qtbot: Any, tmp_path: Path) -> None:
    app = QApplication.instance()
    start = window.settings.theme
    window.theme_action.trigger()
    other = "light" if start == "dark" else "dark"
    assert app.property("nexus_theme") == other
    assert app.palette().window().color().name() == theme.colors(other).window
    assert app_settings.load(tmp_path / "app-settings.json").theme == other
    window.theme_action.trigger()
    assert app.property("nexus_theme") == start


def test_run_async_delivers_on_the_ui_thread_and_drops_results_for_deleted_owners(qtbot: Any) -> None:
    ui = threading.get_ident()
    got: list[tuple[Any, int]] = []
    run_async(lambda: threading.get_ident(), lambda r: got.append((r, threading.get_ident())))
    qtbot.waitUntil(lambda: bool(got), timeout=5000)
    (worker, delivered_on), = got
    assert worker != ui and delivered_on == ui
    errors: list[Exception] = []
    run_async(lambda: 1 / 0, lambda r: None, errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert isinstance(errors[0], ZeroDivisionError)
    owner = QWidget()
    late: list[Any] = []
    gate = threading.Event()
    run_async(lambda: gate.wait(5), late.append, owner=owner)
    owner.deleteLater()
    qtbot.wait(50)
    gate.set()
    qtbot.wait(200)
    assert late == []


@pytest.mark.parametrize("name", ["dark", "light"])
def test_themes_apply(qapp: Any, name: str) -> None:
    c = theme.apply(qapp, name)
    assert qapp.palette().base().color().name() == c.base and "#userBubble" in qapp.styleSheet()
