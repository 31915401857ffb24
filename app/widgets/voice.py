"""The voice panel: microphone level meter, state (idle / listening / thinking / speaking), push-to-talk,
hands-free and barge-in toggles, and the live transcript.

The duplex pipeline (VAD ▸ ASR ▸ LLM ▸ TTS) is its own issue and does not exist yet; until it does the panel
says so, and only the meter is live: it opens the real microphone through sounddevice while the panel is
visible (or hands-free is on) and closes it otherwise. `set_state` and `append_transcript` are the slots the
pipeline's events will drive. Without PortAudio or without an input device the panel says which.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.tasks import run_async

STATES = {"idle": "#8b929e", "listening": "#98c379", "thinking": "#d19a66", "speaking": "#61afef"}
FLOOR_DB = -60.0
PIPELINE_NOTE = ("The duplex voice pipeline (speech in, spoken answers out) is not built yet: push-to-talk and "
                 "hands-free only drive the microphone meter for now, and nothing is transcribed.")


class Microphone:
    """A sounddevice input stream that keeps the latest level in dBFS; the audio callback runs on PortAudio's
    thread and only stores a float, so the UI reads it with a timer instead of being called per block."""

    def __init__(self) -> None:
        self.level_db = FLOOR_DB
        self._stream: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def inputs() -> list[str]:
        """Input device names; raises OSError when PortAudio is missing (imported here, on a pool thread:
        importing sounddevice scans the audio devices)."""
        import sounddevice as sd

        return [d["name"] for d in sd.query_devices() if d.get("max_input_channels", 0) > 0]

    def open(self, device: str | None) -> str:
        import numpy as np
        import sounddevice as sd

        def callback(data: Any, frames: int, t: Any, status: Any) -> None:
            rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64)))) if frames else 0.0
            self.level_db = max(FLOOR_DB, 20 * math.log10(rms)) if rms > 0 else FLOOR_DB

        with self._lock:
            self.close_locked()
            stream = sd.InputStream(device=device or None, channels=1, samplerate=16000, blocksize=512,
                                    dtype="float32", callback=callback)
            stream.start()
            self._stream = stream
            return str(sd.query_devices(stream.device)["name"])

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self.level_db = FLOOR_DB

    @property
    def open_now(self) -> bool:
        return self._stream is not None


class VoicePanel(QWidget):
    toggles_changed = Signal(bool, bool)  # hands-free, barge-in (saved in the settings)

    def __init__(self, mic_name: str = "", hands_free: bool = False, barge_in: bool = True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mic_name = mic_name
        self.mic = Microphone()
        self.available: bool | None = None  # None: not checked yet
        self.state = "idle"
        self.state_label = QLabel(objectName="stateLabel")
        self.meter = QProgressBar(textVisible=True, minimum=0, maximum=int(-FLOOR_DB))
        self.meter.setFormat("mic level")
        self.device_label = QLabel("checking the microphone…", objectName="muted", wordWrap=True)
        self.retry = QPushButton("Look again")
        self.retry.hide()
        self.ptt = QPushButton("Hold to talk", toolTip="Push-to-talk: hold while speaking")
        self.hands_free = QCheckBox("Hands-free (always listening)", checked=hands_free)
        self.barge_in = QCheckBox("Barge-in (interrupt Nexus by speaking)", checked=barge_in)
        self.transcript = QPlainTextEdit(readOnly=True, placeholderText="The live transcript appears here.")
        note = QLabel(PIPELINE_NOTE, objectName="hint", wordWrap=True)
        meter_row = QHBoxLayout()
        meter_row.addWidget(QLabel("Microphone"))
        meter_row.addWidget(self.meter, 1)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_label, 1)
        device_row.addWidget(self.retry)
        toggles = QHBoxLayout()
        toggles.addWidget(self.ptt)
        toggles.addWidget(self.hands_free)
        toggles.addWidget(self.barge_in)
        toggles.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.state_label)
        layout.addLayout(meter_row)
        layout.addLayout(device_row)
        layout.addLayout(toggles)
        layout.addWidget(note)
        layout.addWidget(QLabel("Transcript", objectName="muted"))
        layout.addWidget(self.transcript, 1)
        self._meter_timer = QTimer(self, interval=33)
        self._meter_timer.timeout.connect(self._on_meter)
        self.ptt.pressed.connect(lambda: self._on_listen(True))
        self.ptt.released.connect(lambda: self._on_listen(self.hands_free.isChecked()))
        self.hands_free.toggled.connect(self._on_hands_free)
        self.barge_in.toggled.connect(lambda _: self.toggles_changed.emit(self.hands_free.isChecked(),
                                                                          self.barge_in.isChecked()))
        self.retry.clicked.connect(self.check_devices)
        self.set_state("idle")

    # ----------------------------------------------------------------------------------- pipeline API
    def set_state(self, state: str) -> None:
        self.state = state if state in STATES else "idle"
        self.state_label.setText(self.state.capitalize())
        self.state_label.setStyleSheet(f"color: {STATES[self.state]};")

    def append_transcript(self, who: str, text: str) -> None:
        self.transcript.appendPlainText(f"{who}: {text}")

    # --------------------------------------------------------------------------------------- devices
    def check_devices(self) -> None:
        self.device_label.setText("checking the microphone…")
        self.retry.hide()
        run_async(Microphone.inputs, self._on_inputs, self._on_no_audio, owner=self)

    def _on_inputs(self, names: list[str]) -> None:
        self.available = bool(names)
        if not names:
            self.device_label.setText("No microphone found. Connect one (or check the system's sound settings), "
                                      "then look again.")
            self.retry.show()
            self.meter.setEnabled(False)
            self.meter.setFormat("no microphone")
            return
        self.meter.setEnabled(True)
        if self.isVisible() or self.hands_free.isChecked():
            self._open_mic()

    def _on_no_audio(self, err: Exception) -> None:
        self.available = False
        self.device_label.setText(f"Audio is unavailable: {err}. On Linux install the PortAudio library "
                                  "(apt install libportaudio2).")
        self.retry.show()
        self.meter.setEnabled(False)
        self.meter.setFormat("no audio")

    def _open_mic(self) -> None:
        if self.available and not self.mic.open_now:
            run_async(lambda: self.mic.open(self.mic_name), self._on_opened,
                      lambda e: self.device_label.setText(f"Could not open the microphone: {e}"), owner=self)

    def _on_opened(self, name: str) -> None:
        self.device_label.setText(f"Listening device: {name}")
        self.meter.setFormat("%v dB above silence")
        self._meter_timer.start()

    def _close_mic(self) -> None:
        self._meter_timer.stop()
        self.meter.setValue(0)
        if self.mic.open_now:
            run_async(self.mic.close, lambda _: None, owner=self)

    def _on_meter(self) -> None:
        self.meter.setValue(int(self.mic.level_db - FLOOR_DB))

    # ------------------------------------------------------------------------------------- controls
    def _on_listen(self, listening: bool) -> None:
        self.set_state("listening" if listening and self.available else "idle")

    def _on_hands_free(self, on: bool) -> None:
        self._on_listen(on)
        if on:
            self._open_mic()
        elif not self.isVisible():
            self._close_mic()
        self.toggles_changed.emit(on, self.barge_in.isChecked())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self.available is None:
            self.check_devices()
        else:
            self._open_mic()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        if not self.hands_free.isChecked():  # the microphone is open only while someone can see the meter
            self._close_mic()

    def shutdown(self) -> None:
        self._meter_timer.stop()
        self.mic.close()
