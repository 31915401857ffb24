"""The Search tab: find the images and videos attached in any chat by what they show.

Typing a query and pressing Enter asks the engine (a SearchRequest with the history's attachments, which it
indexes first if they are new); results come back on the Done event as rows of thumbnail, score, file name and
the description the match was made on. Double-click opens the file with the desktop's viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QIcon, QPixmap
from PySide6.QtWidgets import QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from app.attachments import thumbnail_for
from app.tasks import run_async
from nexus_engine.protocol import Done, Error, Message, Progress


class MediaSearch(QWidget):
    search_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.box = QLineEdit(placeholderText="Search your images and videos (e.g. \"a pizza on a table\")…",
                             clearButtonEnabled=True)
        self.status = QLabel(objectName="msgInfo")
        self.results = QListWidget()
        self.results.setIconSize(QSize(64, 64))
        layout = QVBoxLayout(self)
        layout.addWidget(self.box)
        layout.addWidget(self.status)
        layout.addWidget(self.results, 1)
        self.current: str | None = None  # id of the running search
        self.box.returnPressed.connect(self._on_submit)
        self.results.itemDoubleClicked.connect(self._on_open)

    def _on_submit(self) -> None:
        if self.box.text().strip():
            self.status.setText("searching…")
            self.search_requested.emit(self.box.text().strip())

    def on_event(self, msg: Message) -> None:
        if msg.id != self.current:
            return
        if isinstance(msg, Progress) and msg.message:
            self.status.setText(f"{msg.message}…")
        elif isinstance(msg, Done):
            self.current = None
            self.show_results(msg.stats.get("results", []), msg.stats.get("skipped", []))
        elif isinstance(msg, Error):
            self.current = None
            self.status.setText(msg.message + (f" — {msg.hint}" if msg.hint else ""))

    def show_results(self, results: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> None:
        self.results.clear()
        for r in results:
            item = QListWidgetItem(f"{r['score']:.2f}  {Path(r['path']).name}\n{r['description']}")
            item.setToolTip(r["path"])
            item.setData(Qt.ItemDataRole.UserRole, r["path"])
            self.results.addItem(item)
            run_async(lambda r=r: thumbnail_for(r["path"], r["kind"]),
                      lambda img, it=item: it.setIcon(QIcon(QPixmap.fromImage(img))),
                      lambda err: None, owner=self)
        note = f"{len(results)} found" if results else "nothing found (attach images or videos in a chat first)"
        self.status.setText(note + (f"; {len(skipped)} file(s) could not be read" if skipped else ""))

    def _on_open(self, item: QListWidgetItem) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(item.data(Qt.ItemDataRole.UserRole)))

