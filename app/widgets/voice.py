"""The voice panel: microphone level meter, call state, a call / hang-up button, mute, push-to-talk, hands-free
and barge-in toggles, and the live transcript.

The duplex loop (VAD ▸ ASR ▸ LLM ▸ TTS, nexus_engine/voice/) runs in the engine worker, which owns the
microphone and the speaker during a call; the panel only sends controls (QtEngine.voice_start / voice_control /
voice_stop) and draws the call's events: VoiceState drives `set_state`, VoiceLevel the meter, Transcript
(partial, then final) and VoiceReply the transcript. Spoken turns are stored in the chat history by the worker;
`conversation_updated` tells the window to show them. Outside a call the meter opens the microphone itself
(sounddevice) while the panel is visible, so the user can check it. Without PortAudio or without an input
device the panel says which; a call that cannot start says why (no microphone, a missing model).

`attach(engine, context)` connects the panel to the engine; `context()` returns the persona and the open
conversation for a new call. A panel nobody attached finds the engine on its window when first shown.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
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

STATES = {"idle": "#8b929e", "listening": "#98c379", "hearing": "#b5e48c", "thinking": "#d19a66",
          "speaking": "#61afef", "muted": "#8b929e", "connecting": "#d19a66", "reconnecting": "#e5c07b",
          "error": "#e06c75", "ended": "#8b929e"}
FLOOR_DB = -60.0
PIPELINE_NOTE = ("Start a call to talk with Nexus: hands-free (it listens all the time, and you can interrupt it) "
                 "or push-to-talk. What you both say appears in the chat.")
NO_ENGINE_NOTE = "Calls need the engine; the meter below shows the microphone."


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
    conversation_updated = Signal(int)  # a spoken turn was stored in this conversation

    def __init__(self, mic_name: str = "", hands_free: bool = False, barge_in: bool = True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mic_name = mic_name
        self.mic = Microphone()
        self.available: bool | None = None  # None: not checked yet
        self.state = "idle"
        self.engine: Any = None
        self.context: Callable[[], dict[str, Any]] = dict
        self.call_id: str | None = None
        self.call_button = QPushButton("Start call", enabled=False)
        self.mute = QPushButton("Mute", checkable=True, enabled=False, toolTip="Mute the microphone for Nexus")
        self.partial = QLabel("", objectName="muted", wordWrap=True, textFormat=Qt.TextFormat.PlainText)
        self.state_label = QLabel(objectName="stateLabel")
        self.pipeline = QLabel("", objectName="muted", wordWrap=True, textFormat=Qt.TextFormat.PlainText)
        self.meter = QProgressBar(textVisible=True, minimum=0, maximum=int(-FLOOR_DB))
        self.meter.setFormat("mic level")
        self.device_label = QLabel("checking the microphone…", objectName="muted", wordWrap=True)
        self.retry = QPushButton("Look again")
        self.retry.hide()
        self.ptt = QPushButton("Hold to talk", toolTip="Push-to-talk: hold while speaking")
        self.hands_free = QCheckBox("Hands-free (always listening)", checked=hands_free)
        self.barge_in = QCheckBox("Barge-in (interrupt Nexus by speaking)", checked=barge_in)
        self.transcript = QPlainTextEdit(readOnly=True, placeholderText="The live transcript appears here.")
        self.note = QLabel(NO_ENGINE_NOTE, objectName="hint", wordWrap=True)
        meter_row = QHBoxLayout()
        meter_row.addWidget(QLabel("Microphone"))
        meter_row.addWidget(self.meter, 1)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_label, 1)
        device_row.addWidget(self.retry)
        toggles = QHBoxLayout()
        toggles.addWidget(self.call_button)
        toggles.addWidget(self.mute)
        toggles.addWidget(self.ptt)
        toggles.addWidget(self.hands_free)
        toggles.addWidget(self.barge_in)
        toggles.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.state_label)
        layout.addWidget(self.pipeline)
        layout.addLayout(meter_row)
        layout.addLayout(device_row)
        layout.addLayout(toggles)
        layout.addWidget(self.note)
        layout.addWidget(QLabel("Transcript", objectName="muted"))
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.partial)
        self._meter_timer = QTimer(self, interval=33)
        self._meter_timer.timeout.connect(self._on_meter)
        self.ptt.pressed.connect(lambda: self._on_ptt(True))
        self.ptt.released.connect(lambda: self._on_ptt(False))
        self.hands_free.toggled.connect(self._on_hands_free)
        self.barge_in.toggled.connect(self._on_barge_in)
        self.call_button.clicked.connect(self._on_call_button)
        self.mute.toggled.connect(lambda on: self._control(mute=on))
        self.retry.clicked.connect(self.check_devices)
        self.set_state("idle")

    # ----------------------------------------------------------------------------------- pipeline API
    def set_state(self, state: str, detail: str = "") -> None:
        self.state = state if state in STATES else "idle"
        text = self.state.capitalize()
        self.state_label.setText(f"{text} — {detail}" if detail and detail.lower() != self.state else text)
        self.state_label.setStyleSheet(f"color: {STATES[self.state]};")

    def append_transcript(self, who: str, text: str) -> None:
        self.transcript.appendPlainText(f"{who}: {text}")

    # -------------------------------------------------------------------------------------------- calls
    def attach(self, engine: Any, context: Callable[[], dict[str, Any]] | None = None) -> None:
        """Drive calls through `engine` (app.engine_client.QtEngine); `context()` gives the persona and the
        conversation a new call continues."""
        if self.engine is not None:
            return
        self.engine = engine
        self.context = context or dict
        engine.event.connect(self.on_event)
        self.call_button.setEnabled(True)
        self.note.setText(PIPELINE_NOTE)

    def start_call(self) -> None:
        if self.engine is None or self.call_id is not None:
            return
        self._close_mic()  # the worker opens the microphone for the call
        ctx = self.context()
        settings = {"persona": ctx.get("persona") or "", "conversation_id": ctx.get("conversation_id"),
                    "input_device": self.mic_name or "", "barge_in": self.barge_in.isChecked(),
                    "push_to_talk": not self.hands_free.isChecked(), "history": str(ctx.get("history") or "")}
        self.call_id = self.engine.voice_start(settings)
        self.call_button.setText("Hang up")
        self.mute.setEnabled(True)
        self.set_state("connecting", "loading the voice models")

    def end_call(self) -> None:
        if self.engine is not None and self.call_id is not None:
            self.engine.voice_stop()

    def on_event(self, msg: Any) -> None:
        """Every engine event (UI thread); only the running call's are drawn."""
        if self.call_id is None or getattr(msg, "id", None) != self.call_id:
            return
        kind = msg.type_name
        if kind == "voice_state":
            self.set_state(msg.state, msg.detail)
            if msg.info.get("towers"):
                self.pipeline.setText(pipeline_text(msg.info["towers"], str(msg.info.get("aec", ""))))
        elif kind == "voice_level":
            self.meter.setValue(int(max(FLOOR_DB, msg.db) - FLOOR_DB))
            self.meter.setFormat("clipping: lower the microphone gain" if msg.clipping else "%v dB above silence")
        elif kind == "transcript":
            if msg.final:
                self.partial.setText("")
                self.append_transcript("you", msg.text)
                if msg.conversation_id is not None:
                    self.conversation_updated.emit(msg.conversation_id)
            else:
                self.partial.setText(f"… {msg.text}")
        elif kind == "voice_reply":
            if msg.text:
                self.append_transcript("nexus", msg.text)
            elif msg.final:
                if msg.status == "cancelled":
                    self.transcript.appendPlainText("[interrupted]")
                if msg.conversation_id is not None:
                    self.conversation_updated.emit(msg.conversation_id)
        elif kind in ("done", "error"):
            self._call_ended(msg.message if kind == "error" else "", getattr(msg, "hint", ""))

    def _call_ended(self, error: str, hint: str) -> None:
        self.call_id = None
        self.call_button.setText("Start call")
        self.mute.setChecked(False)
        self.mute.setEnabled(False)
        self.partial.setText("")
        self.pipeline.setText("")
        if error:
            self.set_state("error", error + (f" ({hint})" if hint else ""))
        else:
            self.set_state("idle")
        if self.isVisible():
            self._open_mic()

    def _on_call_button(self) -> None:
        if self.call_id is None:
            self.start_call()
        else:
            self.end_call()

    def _control(self, **changes: Any) -> None:
        if self.engine is not None and self.call_id is not None:
            self.engine.voice_control(**changes)

    def _on_ptt(self, down: bool) -> None:
        if self.call_id is not None:
            self._control(ptt=down)
        else:
            self._on_listen(down or self.hands_free.isChecked())

    def _on_barge_in(self, on: bool) -> None:
        self._control(barge_in=on)
        self.toggles_changed.emit(self.hands_free.isChecked(), on)

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
        if self.available and not self.mic.open_now and self.call_id is None:
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
        self._attach_to_window()
        if self.available is None:
            self.check_devices()
        else:
            self._open_mic()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        if not self.hands_free.isChecked():  # the microphone is open only while someone can see the meter
            self._close_mic()

    def _attach_to_window(self) -> None:
        """Without an explicit attach(), use the main window's engine, persona and open conversation."""
        win = self.window()
        engine = getattr(win, "engine", None)
        if self.engine is not None or engine is None or not hasattr(engine, "voice_start"):
            return

        def context() -> dict[str, Any]:
            settings, controller = getattr(win, "settings", None), getattr(win, "controller", None)
            history = getattr(getattr(win, "history", None), "path", "")
            return {"persona": getattr(settings, "persona", ""), "history": str(history),
                    "conversation_id": getattr(controller, "conversation_id", None)}

        def show(conversation_id: int) -> None:  # the chat tab follows the call's conversation
            controller = getattr(win, "controller", None)
            if controller is None:
                return
            if controller.conversation_id != conversation_id and not controller.busy:
                win._on_open_conversation(conversation_id)
            elif controller.conversation_id == conversation_id:
                win._on_conversation_changed(conversation_id)

        self.attach(engine, context)
        self.conversation_updated.connect(show)

    def shutdown(self) -> None:
        self.end_call()
        self._meter_timer.stop()
        self.mic.close()


def pipeline_text(towers: dict[str, str], aec: str = "") -> str:
    """Which towers this call runs, in the order the audio goes through them."""
    if towers.get("duplex"):
        chain = f"{towers.get('asr', '?')} (your words) · {towers['duplex']} answers speech with speech"
    else:
        chain = f"{towers.get('asr', '?')} ▸ {towers.get('llm') or 'the persona chat model'} ▸ {towers.get('tts', '?')}"
    return f"{chain}{f' · echo cancellation: {aec}' if aec else ''}"
