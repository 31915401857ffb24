"""A banner across the top of the window: the engine crashed / restarted / could not start, with Retry and
Dismiss. It never blocks anything: the chat stays readable and the composer keeps what was typed."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class Banner(QFrame):
    retry_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.text = QLabel(wordWrap=True, textFormat=Qt.TextFormat.PlainText)  # engine text, not markup
        self.retry_button = QPushButton("Retry")
        self.dismiss_button = QPushButton("Dismiss")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.retry_button)
        layout.addWidget(self.dismiss_button)
        self.retry_button.clicked.connect(self.retry_requested)
        self.dismiss_button.clicked.connect(self.hide)
        self.hide()

    def show_message(self, text: str, retry: bool = False) -> None:
        self.text.setText(text)
        self.retry_button.setVisible(retry)
        self.show()
