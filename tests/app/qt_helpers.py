"""Qt event helpers shared by the offscreen tests and the real-window screenshot script."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QWidget


def drop(target: QWidget, paths: list[Path]) -> None:
    """What a file manager's drop delivers: a drag-enter, then a drop, with file:// URLs. A scroll area (the
    composer's text box, the chat view) receives them on its viewport, as a real drop does."""
    if isinstance(target, QAbstractScrollArea):
        target = target.viewport()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(target.rect().center())
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    if not enter.isAccepted():
        raise AssertionError(f"{type(target).__name__} refused the drag")
    QApplication.sendEvent(target, QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                              Qt.KeyboardModifier.NoModifier))
