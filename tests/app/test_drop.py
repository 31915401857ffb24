"""Drag-and-drop and paste into the composer with real QMimeData file URLs: COCO images become thumbnails (decoded
off the UI thread, measured by the stall watchdog), are sent to the worker as file references and stored with the
message; bad files each get a clear inline message and the chat keeps what it had."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QPoint, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from app.watchdog import StallWatchdog
from tests.app import media
from tests.app.conftest import record
from tests.app.qt_helpers import drop


def test_dropped_images_are_thumbnailed_sent_and_stored(window: Any, qtbot: Any, coco_images: list[Path],
                                                        artifacts: Path) -> None:
    images = coco_images[:2]
    dog = StallWatchdog()
    dog.start()
    drop(window.composer.edit, images)
    assert len(window.composer.chips) == 2 and window.composer.pending == 2
    qtbot.waitUntil(lambda: window.composer.pending == 0, timeout=10_000)
    stall = dog.stop()
    record(artifacts, "ui_stall_ms_image_drop", round(stall, 1))
    assert stall < 250, f"the UI thread stalled {stall:.0f} ms during an image drop (goal < 50 ms)"
    assert all(not c.thumb.pixmap().isNull() for c in window.composer.chips)
    assert window.composer.errors.isHidden()

    window.composer.edit.setPlainText("What is in these pictures?")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    assert window.composer.chips == []  # the strip is emptied once the message is sent
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    user = window.chat.messages[0]
    assert user.thumbs.count() == 3  # two thumbnails and the stretch
    request = window.controller.session.last_request
    assert [a["kind"] for a in request.attachments] == ["image", "image"]
    assert all(Path(a["path"]).is_file() and Path(a["path"]).is_absolute() for a in request.attachments)
    stored = window.history.attachments(window.history.messages(window.controller.conversation_id)[0].id)
    assert [a.meta["name"] for a in stored] == [p.name for p in images]
    assert [Path(a.path).read_bytes() for a in stored] == [p.read_bytes() for p in images]
    assert window.chat.messages[1].status == "done"


def test_drop_on_the_chat_view_and_remove_a_chip(window: Any, qtbot: Any, coco_images: list[Path]) -> None:
    drop(window.chat, coco_images[2:5])
    assert len(window.composer.chips) == 3
    qtbot.waitUntil(lambda: window.composer.pending == 0, timeout=10_000)
    chip = window.composer.chips[1]
    qtbot.mouseClick(chip.remove, Qt.MouseButton.LeftButton, pos=QPoint(4, 4))
    assert [c.name for c in window.composer.chips] == [coco_images[2].name, coco_images[4].name]


def test_pasted_image_becomes_an_attachment(window: Any, qtbot: Any, coco_images: list[Path]) -> None:
    mime = QMimeData()
    mime.setImageData(QImage(str(coco_images[0])))
    QApplication.clipboard().setMimeData(mime)
    window.composer.edit.setFocus()
    window.composer.edit.paste()
    qtbot.waitUntil(lambda: window.composer.chips and window.composer.pending == 0, timeout=10_000)
    att = window.composer.ready_attachments[0]
    assert att.name == "pasted image.png" and att.kind == "image" and Path(att.path).suffix == ".png"
    assert window.composer.edit.toPlainText() == ""


def test_bad_files_each_get_an_inline_message_and_nothing_is_lost(window: Any, qtbot: Any, tmp_path: Path,
                                                                   coco_images: list[Path]) -> None:
    window.composer.edit.setPlainText("Say hi.")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    before = [(m.role, m.text) for m in window.chat.messages]
    bad = [
        media.truncated(tmp_path / "half.jpg", coco_images[0]),
        media.png_claiming(tmp_path / "huge.png", 20_000, 10_000),
        media.video_without_frames(tmp_path / "empty.mkv"),
        media.not_an_image(tmp_path / "fake.png"),
    ]
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4\n")
    bad.append(tmp_path / "report.pdf")
    window.composer.edit.setPlainText("a draft the user is typing")
    drop(window.composer.edit, [*bad, coco_images[1]])
    qtbot.waitUntil(lambda: window.composer.pending == 0, timeout=10_000)
    errors = window.composer.errors.text()
    for needle in ("half.jpg: the image is damaged or incomplete", "huge.png: the image is 200 megapixels",
                   "empty.mkv: the video has no frames", "fake.png: not a readable image",
                   "report.pdf: unsupported file type .pdf"):
        assert needle in errors, errors
    assert [c.name for c in window.composer.chips] == [coco_images[1].name]  # the good file stays
    assert window.composer.edit.toPlainText() == "a draft the user is typing"
    assert [(m.role, m.text) for m in window.chat.messages] == before


def test_a_dropped_voice_note_is_heard_and_the_answer_says_so(window: Any, qtbot: Any, tmp_path: Path) -> None:
    import os

    clips = sorted(Path(os.environ.get("NEXUS_LIBRISPEECH", "/work/shared/data/librispeech")).glob("*.flac"))
    if not clips:
        import pytest

        pytest.skip("no LibriSpeech clips")
    note = tmp_path / "voice note.flac"
    note.write_bytes(clips[0].read_bytes())
    drop(window.composer.edit, [note])
    qtbot.waitUntil(lambda: window.composer.chips and window.composer.pending == 0, timeout=10_000)
    assert window.composer.chips[0].name == "voice note.flac" and window.composer.errors.isHidden()
    window.composer.edit.setPlainText("What did the speaker say?")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=120_000)
    answer = window.chat.messages[1]
    assert answer.status == "done", answer.text
    info = answer.info.text()
    assert "whisper-base" in info and "audio via transcript" in info, info
    assert window.controller.session.last_request.attachments[0]["name"] == "voice note.flac"
