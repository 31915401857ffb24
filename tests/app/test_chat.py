"""The chat, end to end on the real worker (starter model): streaming, stop, regenerate, engine errors, a worker
killed mid-answer, persistence. The UI-thread watchdog measures the longest stall while an answer streams."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from typing import Any

from PySide6.QtCore import Qt, QTimer

from app.engine_client import RESTARTED
from app.watchdog import StallWatchdog
from tests.app.conftest import record

LONG_PROMPT = "Write a long story about a dragon who learns to bake bread."


def send(qtbot: Any, window: Any, text: str) -> Any:
    """Type `text`, press Enter, return the answer bubble."""
    window.composer.edit.setPlainText(text)
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert window.controller.busy, window.composer.errors.text()
    return window.chat.messages[-1]


def wait_idle(qtbot: Any, window: Any, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=timeout)


def test_answer_streams_renders_and_is_stored(window: Any, qtbot: Any, artifacts: Any) -> None:
    samples: list[tuple[bool, int]] = []  # (still streaming, characters shown), every 10 ms
    sampler = QTimer(interval=10)
    sampler.timeout.connect(lambda: samples.append((window.controller.busy, len(answer.text))))
    dog = StallWatchdog()
    dog.start()
    answer = send(qtbot, window, "Name three primary colors.")
    sampler.start()
    assert answer.note.text() == "thinking…"
    wait_idle(qtbot, window)
    sampler.stop()
    stall = dog.stop()
    record(artifacts, "ui_stall_ms_streamed_answer", round(stall, 1))

    partial = {n for busy, n in samples if busy and 0 < n < len(answer.text)}
    assert len(partial) >= 2, f"the text did not grow while streaming: {samples[-5:]}"
    assert answer.status == "done" and answer.text.strip()
    info = answer.info.text()
    assert "smollm2-chat" in info and "tok/s" in info and "first token" in info, info
    assert stall < 250, f"the UI thread stalled {stall:.0f} ms while an answer streamed (goal < 50 ms)"

    cid = window.controller.conversation_id
    stored = window.history.messages(cid)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].status == "done" and stored[1].content == answer.text
    assert stored[1].meta["tower"] == "smollm2-chat"
    assert window.conversations.ids() == [cid]
    assert answer.regen_button.isVisible()


def test_stop_keeps_the_partial_answer(make_window: Any, qtbot: Any) -> None:
    window = make_window(max_tokens=400)
    answer = send(qtbot, window, LONG_PROMPT)
    assert window.composer.stop_button.isVisible() and not window.composer.send_button.isVisible()
    qtbot.waitUntil(lambda: len(answer.text) > 20, timeout=30_000)
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_Escape)  # the Stop shortcut
    wait_idle(qtbot, window, 20_000)
    assert answer.status == "cancelled"
    assert "Stopped" in answer.note.text() and answer.text
    stored = window.history.messages(window.controller.conversation_id)[-1]
    assert stored.status == "cancelled" and stored.content == answer.text
    assert window.composer.send_button.isVisible()


def test_regenerate_replaces_the_answer_and_keeps_the_old_one(window: Any, qtbot: Any) -> None:
    first = send(qtbot, window, "Say hello.")
    wait_idle(qtbot, window)
    old_id = first.message_id
    qtbot.mouseClick(first.regen_button, Qt.MouseButton.LeftButton)
    assert window.controller.busy
    second = window.chat.last_answer()
    assert second is not first
    wait_idle(qtbot, window)
    assert second.status == "done" and second.message_id != old_id
    assert [m.role for m in window.chat.messages] == ["user", "assistant"]
    all_msgs = window.history.messages(window.controller.conversation_id, include_superseded=True)
    assert [m.id for m in all_msgs if m.superseded_by == second.message_id] == [old_id]


def test_engine_error_is_shown_inline_and_earlier_turns_stay(make_window: Any, qtbot: Any) -> None:
    window = make_window()
    first = send(qtbot, window, "Say hello.")
    wait_idle(qtbot, window)
    window.controller.max_tokens = 0  # the engine refuses this with a typed bad_input error
    failed = send(qtbot, window, "And goodbye?")
    wait_idle(qtbot, window)
    assert failed.status == "error"
    assert failed.note.isVisible() and "max_tokens must be at least 1" in failed.note.text()
    assert first.status == "done" and first.text and first in window.chat.messages
    assert len(window.chat.messages) == 4
    assert [m.status for m in window.history.messages(window.controller.conversation_id)][1::2] == ["done", "error"]


def test_empty_prompt_is_refused_inline(window: Any, qtbot: Any) -> None:
    window.composer.edit.setPlainText("   \n ")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert not window.controller.busy
    assert window.composer.errors.isVisible() and "empty" in window.composer.errors.text()
    assert window.chat.messages == []


def test_shortcuts_new_chat_and_focus(window: Any, qtbot: Any) -> None:
    send(qtbot, window, "Say hi.")
    wait_idle(qtbot, window)
    first = window.controller.conversation_id
    window.activateWindow()
    window.tabs.setCurrentIndex(2)
    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentIndex() == 0
    qtbot.waitUntil(lambda: window.composer.edit.hasFocus(), timeout=2000)
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.chat.messages == [], timeout=2000)
    assert window.controller.conversation_id is None
    window.composer.edit.setPlainText("Say bye.")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_idle(qtbot, window)
    assert window.controller.conversation_id not in (None, first)
    assert len(window.conversations.ids()) == 2
    # reopening the first conversation from the list shows what was stored
    item = window.conversations.list.item(window.conversations.ids().index(first))
    window.conversations.list.itemClicked.emit(item)
    qtbot.waitUntil(lambda: window.controller.conversation_id == first, timeout=2000)
    assert window.chat.messages[0].text == "Say hi."


def test_worker_killed_mid_answer_shows_banner_and_keeps_the_chat(make_window: Any, qtbot: Any) -> None:
    window = make_window(max_tokens=400)
    first = send(qtbot, window, "Say hello.")
    wait_idle(qtbot, window)
    answer = send(qtbot, window, LONG_PROMPT)
    qtbot.waitUntil(lambda: len(answer.text) > 20, timeout=30_000)
    os.kill(window.engine.client.worker_pid, signal.SIGKILL)
    wait_idle(qtbot, window, 60_000)
    assert answer.status == "interrupted" and answer.text, answer.note.text()
    assert "engine stopped" in answer.note.text()
    qtbot.waitUntil(lambda: window.banner.isVisible() and window.engine.state == RESTARTED, timeout=30_000)
    assert "restarted" in window.banner.text.text()
    assert first in window.chat.messages and first.text  # nothing already in the chat is lost
    stored = window.history.messages(window.controller.conversation_id)
    assert [(m.role, m.status) for m in stored] == [("user", "done"), ("assistant", "done"), ("user", "done"),
                                                    ("assistant", "interrupted")]
    # the restarted worker answers the next message
    again = send(qtbot, window, "Are you back?")
    wait_idle(qtbot, window)
    assert again.status == "done" and again.text


def test_engine_settings_restart_the_worker_and_persona_reaches_the_prompt(make_window: Any, qtbot: Any,
                                                                            tmp_path: Any) -> None:
    import psutil

    from app import settings as app_settings

    window = make_window(persona="You are terse.")
    answer = send(qtbot, window, "Say hi.")
    wait_idle(qtbot, window)
    assert answer.status == "done"
    assert window.controller.session.last_request.messages[0] == {"role": "system", "content": "You are terse."}
    original = window.settings
    old_pid = window.engine.client.worker_pid
    window.apply_settings(replace(original, ram_budget="2GiB"))
    qtbot.waitUntil(lambda: window.engine.state == "ready" and window.engine.client.worker_pid != old_pid,
                    timeout=30_000)
    assert psutil.Process(window.engine.client.worker_pid).environ()["NEXUS_RAM_BUDGET"] == str(2 * 2**30)
    assert app_settings.load(tmp_path / "app-settings.json").ram_budget == "2GiB"  # saved for the next run
    window.apply_settings(original)
    qtbot.waitUntil(lambda: window.engine.state == "ready" and "NEXUS_RAM_BUDGET" not in psutil.Process(
        window.engine.client.worker_pid).environ(), timeout=30_000)
    again = send(qtbot, window, "Still there?")
    wait_idle(qtbot, window)
    assert again.status == "done"
