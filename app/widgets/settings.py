"""The settings dialog: profile, VRAM/RAM budgets, devices (GPU, microphone, speaker), persona, data folder,
theme. It edits a copy of AppSettings and hands it back on OK; the main window saves and applies it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.settings import AppSettings, check_budget
from app.tasks import run_async
from nexus_engine.config.schema import ModelsConfig

DEFAULT_DEVICE = "(system default)"


def audio_devices() -> tuple[list[str], list[str]]:
    """(inputs, outputs) by name; imports sounddevice, so call it on a pool thread."""
    import sounddevice as sd

    devices = list(sd.query_devices())
    return ([d["name"] for d in devices if d.get("max_input_channels", 0) > 0],
            [d["name"] for d in devices if d.get("max_output_channels", 0) > 0])


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, config: ModelsConfig, override: Path,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Nexus settings")
        self.original = settings
        self.profile = QComboBox()
        for name, prof in config.profiles.items():
            self.profile.addItem(name, name)
            self.profile.setItemData(self.profile.count() - 1, prof.description, Qt.ItemDataRole.ToolTipRole)
        index = self.profile.findData(settings.profile or config.default_profile)
        self.profile.setCurrentIndex(max(index, 0))
        self.vram = QLineEdit(settings.vram_budget, placeholderText="all of the GPU (e.g. 12GiB)")
        self.ram = QLineEdit(settings.ram_budget, placeholderText="automatic (e.g. 24GiB)")
        self.gpu = QComboBox(editable=True)
        self.gpu.addItems(["auto", "cpu", "cuda:0", "cuda:1"])
        self.gpu.setCurrentText(settings.gpu)
        self.mic, self.speaker = QComboBox(), QComboBox()
        for combo, value in ((self.mic, settings.mic), (self.speaker, settings.speaker)):
            combo.addItem(DEFAULT_DEVICE, "")
            if value:
                combo.addItem(value, value)
                combo.setCurrentIndex(1)
        self.devices_note = QLabel("looking for audio devices…", objectName="muted")
        self.persona = QPlainTextEdit(settings.persona, placeholderText="You are Nexus, a helpful assistant…")
        self.persona.setFixedHeight(90)
        self.data_dir = QLineEdit(settings.data_dir, placeholderText="default data folder")
        browse = QPushButton("Browse…")
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_dir, 1)
        data_row.addWidget(browse)
        self.theme = QComboBox()
        self.theme.addItems(["dark", "light"])
        self.theme.setCurrentText(settings.theme)
        self.max_tokens = QSpinBox(minimum=16, maximum=8192, value=settings.max_tokens)
        self.error = QLabel(objectName="inlineError", wordWrap=True)
        self.error.hide()
        form = QFormLayout()
        form.addRow("Profile", self.profile)
        form.addRow("", QLabel(f"starter, seed-16gb, or a custom [profiles.NAME] in {override}",
                               objectName="hint", wordWrap=True))
        form.addRow("VRAM budget", self.vram)
        form.addRow("RAM budget", self.ram)
        form.addRow("GPU", self.gpu)
        form.addRow("Microphone", self.mic)
        form.addRow("Speaker", self.speaker)
        form.addRow("", self.devices_note)
        form.addRow("Persona", self.persona)
        form.addRow("Data folder", data_row)
        form.addRow("Theme", self.theme)
        form.addRow("Longest answer (tokens)", self.max_tokens)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Profile, budgets and GPU restart the engine; a new data folder is used from the "
                                "next start of Nexus.", objectName="hint", wordWrap=True))
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        buttons.accepted.connect(self._on_ok)
        buttons.rejected.connect(self.reject)
        browse.clicked.connect(self._on_browse)
        run_async(audio_devices, self._on_devices,
                  lambda e: self.devices_note.setText(f"audio devices unavailable: {e}"), owner=self)

    def _on_devices(self, found: tuple[list[str], list[str]]) -> None:
        for combo, names in zip((self.mic, self.speaker), found):
            for name in names:
                if combo.findData(name) < 0:
                    combo.addItem(name, name)
        self.devices_note.setText(f"{len(found[0])} microphone(s), {len(found[1])} speaker(s) found")

    def _on_browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data folder", self.data_dir.text() or str(Path.home()))
        if folder:
            self.data_dir.setText(folder)

    def result_settings(self) -> AppSettings:
        return replace(self.original, profile=self.profile.currentData() or "", vram_budget=self.vram.text().strip(),
                       ram_budget=self.ram.text().strip(), gpu=self.gpu.currentText().strip() or "auto",
                       mic=self.mic.currentData() or "", speaker=self.speaker.currentData() or "",
                       persona=self.persona.toPlainText().strip(), data_dir=self.data_dir.text().strip(),
                       theme=self.theme.currentText(), max_tokens=self.max_tokens.value())

    def _on_ok(self) -> None:
        problems = [f"{what}: {err}" for what, err in (("VRAM budget", check_budget(self.vram.text())),
                                                       ("RAM budget", check_budget(self.ram.text()))) if err]
        gpu = self.gpu.currentText().strip()
        if gpu not in ("", "auto", "cpu") and not (gpu.startswith("cuda:") and gpu[5:].isdigit()):
            problems.append(f"GPU: {gpu!r} is not auto, cpu or cuda:N")
        if problems:
            self.error.setText("\n".join(problems))
            self.error.show()
            return
        self.accept()
