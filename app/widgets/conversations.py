"""The conversation list, read from the SQLite history: most recently active first, a New chat button, and
rename / delete from the context menu."""

from __future__ import annotations

import time

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import (
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from nexus_engine.history import History

ID_ROLE = Qt.ItemDataRole.UserRole


class ConversationList(QWidget):
    open_requested = Signal(int)
    new_requested = Signal()
    deleted = Signal(int)

    def __init__(self, history: History, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = history
        self.new_button = QPushButton("New chat", toolTip="Start a new conversation (Ctrl+N)")
        self.list = QListWidget(wordWrap=True)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Conversations", objectName="muted"))
        layout.addWidget(self.new_button)
        layout.addWidget(self.list, 1)
        self.new_button.clicked.connect(self.new_requested)
        self.list.itemActivated.connect(self._on_activated)
        self.list.itemClicked.connect(self._on_activated)
        self.list.customContextMenuRequested.connect(self._on_menu)
        self._current: int | None = None

    def refresh(self, current: int | None = None) -> None:
        """Reload from SQLite (a few rows: cheap enough for the UI thread)."""
        self._current = current
        self.list.blockSignals(True)
        self.list.clear()
        for conv in self.history.list_conversations():
            item = QListWidgetItem(f"{conv.title or 'Untitled'}\n{_when(conv.updated)}")
            item.setData(ID_ROLE, conv.id)
            item.setToolTip(conv.title)
            self.list.addItem(item)
            if conv.id == current:
                item.setSelected(True)
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)

    def ids(self) -> list[int]:
        return [self.list.item(i).data(ID_ROLE) for i in range(self.list.count())]

    def _on_activated(self, item: QListWidgetItem) -> None:
        cid = item.data(ID_ROLE)
        if cid != self._current:
            self.open_requested.emit(cid)

    def _on_menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        cid = item.data(ID_ROLE)
        menu = QMenu(self)
        rename = menu.addAction("Rename…")
        delete = menu.addAction("Delete")
        chosen = menu.exec(self.list.mapToGlobal(pos))
        if chosen is rename:
            title, ok = QInputDialog.getText(self, "Rename", "Title:", text=item.toolTip())
            if ok and title.strip():
                self.history.rename(cid, title.strip())
                self.refresh(self._current)
        elif chosen is delete:
            answer = QMessageBox.question(self, "Delete conversation",
                                          f"Delete “{item.toolTip() or 'Untitled'}” and its messages?")
            if answer == QMessageBox.StandardButton.Yes:
                self.history.delete(cid)
                self.deleted.emit(cid)
                self.refresh(None if cid == self._current else self._current)


def _when(ts: float) -> str:
    age = time.time() - ts
    if age < 60:
        return "just now"
    if age < 3600:
        return f"{int(age // 60)} min ago"
    if age < 86400:
        return time.strftime("%H:%M", time.localtime(ts))
    return time.strftime("%Y-%m-%d", time.localtime(ts))
