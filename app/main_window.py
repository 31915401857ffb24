"""A first window: one conversation streamed from the engine worker. The full app is its own issue."""

from __future__ import annotations

import threading

from PySide6.QtWidgets import QLabel, QLineEdit, QMainWindow, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.engine_bridge import EngineBridge
from nexus_engine.protocol import Done, Error, Message, TokenChunk


class MainWindow(QMainWindow):
    def __init__(self, bridge: EngineBridge) -> None:
        super().__init__()
        self.setWindowTitle("Nexus")
        self.resize(760, 560)
        self.bridge = bridge
        self.messages: list[dict[str, str]] = []
        self.current: str | None = None
        self.answer = ""
        self.view = QPlainTextEdit(readOnly=True)
        self.input = QLineEdit(placeholderText="Ask Nexus…")
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop", enabled=False)
        self.status = QLabel("starting the engine…")
        layout = QVBoxLayout()
        for w in (self.view, self.input, self.send_button, self.stop_button, self.status):
            layout.addWidget(w)
        root = QWidget()
        root.setLayout(layout)
        self.setCentralWidget(root)
        self.input.returnPressed.connect(self._on_send)
        self.send_button.clicked.connect(self._on_send)
        self.stop_button.clicked.connect(self._on_stop)
        bridge.event.connect(self._on_event)
        # starting the worker takes a moment; never on the UI thread
        threading.Thread(target=self._start_engine, daemon=True).start()

    def _start_engine(self) -> None:
        try:
            self.bridge.client.start()
            self.bridge.event.emit(Done(id="__started__"))
        except Exception as e:  # shown in the status line; the window stays usable
            self.bridge.event.emit(Error(id="__started__", code="worker_crashed", message=str(e)))

    def _on_send(self) -> None:
        text = self.input.text().strip()
        if not text or self.current is not None:
            return
        self.input.clear()
        self.messages.append({"role": "user", "content": text})
        self.view.appendPlainText(f"\nYou: {text}\nNexus: ")
        self.answer = ""
        self.current = self.bridge.client.chat(list(self.messages)).id
        self.stop_button.setEnabled(True)

    def _on_stop(self) -> None:
        if self.current:
            self.bridge.client.cancel(self.current)

    def _on_event(self, msg: Message) -> None:
        if msg.id == "__started__":
            self.status.setText("engine ready" if isinstance(msg, Done) else f"engine failed: {msg.message}")
            return
        if msg.id != self.current:
            return
        if isinstance(msg, TokenChunk):
            self.answer += msg.text
            self.view.insertPlainText(msg.text)
        elif isinstance(msg, Done | Error):
            if isinstance(msg, Error):
                self.view.appendPlainText(f"[{msg.message}]")
            self.messages.append({"role": "assistant", "content": self.answer})
            stats = msg.stats if isinstance(msg, Done) else {}
            if stats:
                self.status.setText(f"{stats.get('tower')}: {stats.get('tokens')} tokens, "
                                    f"{stats.get('decode_tok_s', 0):.0f} tok/s")
            self.current = None
            self.stop_button.setEnabled(False)
