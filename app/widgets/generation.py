"""The generation panel: prompt, negative prompt, size, steps, seed, image/video; a progress bar with step count
and ETA, Cancel, a preview of intermediate steps (when the pipeline sends them), a gallery with Save / Open / Copy.

When the profile has no generation tower, or the engine cannot run one, a notice says so and shows the lines to
add to the user's models.toml. The panel never guesses an output: it shows what the engine's Done names.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.attachments import thumbnail_for
from app.tasks import run_async
from nexus_engine import weights
from nexus_engine.config.schema import ModelsConfig
from nexus_engine.protocol import Done, Error, GenerateRequest, Message, Progress, Started

SIZES = ["512×512", "768×768", "1024×1024", "768×512", "512×768", "256×256", "64×64"]
OUTPUT_KEYS = ("path", "paths", "images", "image", "output", "outputs", "video")
PATH_ROLE = Qt.ItemDataRole.UserRole
VIDEO_EXT = (".mp4", ".webm", ".gif", ".mkv", ".mov")


def how_to(role: str, profile: str, override: Path) -> str:
    tower, kind, example = (("sd3-medium", "image_gen", "/models/stable-diffusion-3-medium-diffusers")
                            if role == "imagination" else
                            ("svd-xt-1-1", "video_gen", "/models/stable-video-diffusion-img2vid-xt-1-1"))
    return (f"# {override}  (your override file; it merges over the shipped models.toml)\n"
            f"[towers.{tower}]            # declared in the shipped file as kind = \"{kind}\"\n"
            f"source = {{ path = \"{example}\" }}   # a diffusers folder (has model_index.json)\n\n"
            f"[profiles.{profile}.roles]\n{role} = \"{tower}\"\n")


def outputs(stats: dict[str, Any]) -> list[str]:
    """Output files named by a generate request's Done stats."""
    found: list[str] = []
    for key in OUTPUT_KEYS:
        value = stats.get(key)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v and v not in found:
                found.append(v)
    return found


def unavailable(err: Error) -> bool:
    """The engine has no way to generate (no handler, no tower for the role, weights missing)."""
    return (err.code in ("model_missing", "config_error")
            or (err.code == "protocol_error" and "cannot handle" in err.message))


class GenerationPanel(QWidget):
    generate_requested = Signal(object)  # GenerateRequest
    cancel_requested = Signal(str)  # request id

    def __init__(self, config: ModelsConfig, profile: str, override: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config, self.profile, self.override = config, profile, override
        self.current: str | None = None
        self._build()
        self.refresh_availability()

    def _build(self) -> None:
        self.prompt = QPlainTextEdit(placeholderText="A lighthouse on a cliff at dusk, oil painting")
        self.prompt.setFixedHeight(70)
        self.negative = QLineEdit(placeholderText="blurry, low quality")
        self.size = QComboBox()
        self.size.addItems(SIZES)
        self.steps = QSpinBox(minimum=1, maximum=150, value=28)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=-1, specialValueText="random")
        self.image_kind, self.video_kind = QRadioButton("Image", checked=True), QRadioButton("Video")
        kinds = QButtonGroup(self)
        kinds.addButton(self.image_kind)
        kinds.addButton(self.video_kind)
        kind_row = QHBoxLayout()
        kind_row.addWidget(self.image_kind)
        kind_row.addWidget(self.video_kind)
        kind_row.addStretch(1)
        self.input_image = QLineEdit(placeholderText="input image for image-to-video")
        self.browse = QPushButton("Browse…")
        self.frames = QSpinBox(minimum=2, maximum=100, value=14)
        video_row = QHBoxLayout()
        video_row.addWidget(self.input_image, 1)
        video_row.addWidget(self.browse)
        video_row.addWidget(QLabel("frames"))
        video_row.addWidget(self.frames)
        self.video_row = QWidget()
        self.video_row.setLayout(video_row)
        self.video_row.hide()
        form = QFormLayout()
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative prompt", self.negative)
        form.addRow("Kind", kind_row)
        form.addRow("", self.video_row)
        form.addRow("Size", self.size)
        form.addRow("Steps", self.steps)
        form.addRow("Seed", self.seed)
        self.generate_button = QPushButton("Generate")
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.progress = QProgressBar(textVisible=True, value=0)
        self.progress.setFormat("idle")
        self.progress_text = QLabel(objectName="muted")
        self.error = QLabel(objectName="inlineError", wordWrap=True, textFormat=Qt.TextFormat.PlainText)
        self.error.hide()
        self.preview = QLabel("preview", alignment=Qt.AlignmentFlag.AlignCenter, objectName="muted")
        self.preview.setMinimumSize(256, 256)
        self.gallery = QListWidget(viewMode=QListWidget.ViewMode.IconMode, movement=QListWidget.Movement.Static)
        self.gallery.setIconSize(QPixmap(128, 128).size())
        self.gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.save_button, self.open_button = QPushButton("Save…"), QPushButton("Open")
        self.copy_button = QPushButton("Copy")
        self.notice = QFrame(objectName="notice")
        self.notice_text = QLabel(wordWrap=True)
        self.snippet = QPlainTextEdit(readOnly=True, lineWrapMode=QPlainTextEdit.LineWrapMode.NoWrap)
        self.snippet.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.snippet.setFixedHeight(130)
        self.copy_snippet = QPushButton("Copy these lines")
        notice = QVBoxLayout(self.notice)
        notice.addWidget(self.notice_text)
        notice.addWidget(self.snippet)
        notice.addWidget(self.copy_snippet, 0, Qt.AlignmentFlag.AlignLeft)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        left = QVBoxLayout()
        left.addWidget(self.notice)
        left.addLayout(form)
        left.addLayout(buttons)
        left.addWidget(self.progress)
        left.addWidget(self.progress_text)
        left.addWidget(self.error)
        left.addStretch(1)
        gallery_buttons = QHBoxLayout()
        for b in (self.save_button, self.open_button, self.copy_button):
            gallery_buttons.addWidget(b)
        gallery_buttons.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(self.preview, 2)
        right.addWidget(QLabel("Gallery", objectName="muted"))
        right.addWidget(self.gallery, 1)
        right.addLayout(gallery_buttons)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 3)
        layout.addLayout(right, 2)
        self.video_kind.toggled.connect(self.video_row.setVisible)
        self.video_kind.toggled.connect(lambda _: self.refresh_availability())
        self.browse.clicked.connect(self._on_browse)
        self.generate_button.clicked.connect(self._on_generate)
        self.cancel_button.clicked.connect(self._on_cancel)
        self.copy_snippet.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.snippet.toPlainText()))
        self.save_button.clicked.connect(self._on_save)
        self.open_button.clicked.connect(self._on_open)
        self.copy_button.clicked.connect(self._on_copy)
        self.gallery.itemSelectionChanged.connect(self._on_gallery_selection)
        self._on_gallery_selection()

    # ---------------------------------------------------------------------------------- availability
    @property
    def role(self) -> str:
        return "video" if self.video_kind.isChecked() else "imagination"

    def refresh_availability(self) -> None:
        """Say up front when the profile has no tower for this kind, or its weights are not installed."""
        spec = self.config.tower_for(self.role, self.profile)
        if spec is None:
            what = "video generation" if self.role == "video" else "image generation"
            self.show_unavailable(f"No {what} tower is installed: profile “{self.profile}” maps no tower to the "
                                  f"“{self.role}” role. Nothing that can draw ships offline. To add one, put a "
                                  "diffusers pipeline on disk and declare it in your models.toml:")
            return
        run_async(lambda: weights.installed(spec), lambda r: self._on_installed(spec.name, r), owner=self)

    def _on_installed(self, tower: str, result: tuple[bool, str]) -> None:
        ok, where = result
        if ok:
            self.notice.hide()
        else:
            self.show_unavailable(f"The {self.role} tower “{tower}” is declared but its weights are not here "
                                  f"({where}). Point it at a local diffusers folder:")

    def show_unavailable(self, text: str) -> None:
        self.notice_text.setText(text)
        self.snippet.setPlainText(how_to(self.role, self.profile, self.override))
        self.notice.show()

    # ---------------------------------------------------------------------------------------- actions
    def _on_generate(self) -> None:
        self.error.hide()
        prompt = self.prompt.toPlainText().strip()
        if not prompt:
            return self._fail("The prompt is empty: describe what to draw.")
        image = self.input_image.text().strip() or None
        if self.role == "video" and not image:
            return self._fail("Video generation animates an image: choose an input image first.")
        if image and not Path(image).is_file():
            return self._fail(f"The input image {image} does not exist.")
        w, h = (int(x) for x in self.size.currentText().split("×"))
        seed = self.seed.value()
        req = GenerateRequest(kind="video" if self.role == "video" else "image", prompt=prompt,
                              negative_prompt=self.negative.text().strip(), width=w, height=h,
                              steps=self.steps.value(), seed=None if seed < 0 else seed, image=image,
                              frames=self.frames.value(), preview_every=1)
        self.current = req.id
        self._set_running(True)
        self.progress.setRange(0, req.steps)
        self.progress.setValue(0)
        self.progress.setFormat("queued")
        self.progress_text.setText("")
        self.generate_requested.emit(req)
        return None

    def _on_cancel(self) -> None:
        if self.current:
            self.cancel_requested.emit(self.current)
            self.progress.setFormat("cancelling…")

    def _on_browse(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Input image", str(Path.home()),
                                              "Images (*.png *.jpg *.jpeg *.webp)")
        if name:
            self.input_image.setText(name)

    def _fail(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def _set_running(self, running: bool) -> None:
        self.generate_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    # ----------------------------------------------------------------------------------------- events
    def on_event(self, msg: Message) -> None:
        if msg.id != self.current:
            return
        if isinstance(msg, Started):
            self.progress.setFormat("starting…")
        elif isinstance(msg, Progress):
            self._on_progress(msg)
        elif isinstance(msg, Done):
            self._on_done(msg)
        elif isinstance(msg, Error):
            self.current = None
            self._set_running(False)
            self.progress.setFormat("failed")
            if unavailable(msg):
                self.show_unavailable(f"The engine cannot generate right now: {msg.message}. "
                                      "A generation tower has to be declared and installed:")
            else:
                self._fail(f"{msg.message}" + (f" — {msg.hint}" if msg.hint else ""))

    def _on_progress(self, msg: Progress) -> None:
        total = max(msg.total, 1)
        self.progress.setRange(0, total)
        self.progress.setValue(min(msg.step, total))
        self.progress.setFormat(f"step {msg.step}/{msg.total}")
        eta = "" if msg.eta_s is None else f" · about {msg.eta_s:.1f} s left" if msg.eta_s < 10 else \
            f" · about {msg.eta_s:.0f} s left"
        self.progress_text.setText(f"{msg.message or 'denoising'}{eta}")
        if msg.preview:
            path = msg.preview
            run_async(lambda: QImage(path), self._show_preview, owner=self)

    def _show_preview(self, image: QImage) -> None:
        if not image.isNull():
            self.preview.setPixmap(QPixmap.fromImage(image).scaled(
                self.preview.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))

    def _on_done(self, msg: Done) -> None:
        self.current = None
        self._set_running(False)
        if msg.stats.get("finish") == "cancelled":
            self.progress.setFormat("cancelled")
            return
        self.progress.setValue(self.progress.maximum())
        self.progress.setFormat("done")
        secs = msg.stats.get("total_ms", 0) / 1000
        self.progress_text.setText(f"finished in {secs:.1f} s" if secs else "finished")
        files = outputs(msg.stats)
        if not files:
            self._fail("The engine finished but named no output file.")
        for path in files:
            self.add_to_gallery(path)

    def add_to_gallery(self, path: str) -> None:
        kind = "video" if path.lower().endswith(VIDEO_EXT) else "image"
        item = QListWidgetItem(Path(path).name)
        item.setData(PATH_ROLE, path)
        item.setToolTip(path)
        self.gallery.insertItem(0, item)
        self.gallery.setCurrentItem(item)
        run_async(lambda: thumbnail_for(path, kind), lambda img: self._set_icon(item, img, path), owner=self)

    def _set_icon(self, item: QListWidgetItem, image: QImage, path: str) -> None:
        item.setIcon(QIcon(QPixmap.fromImage(image)))
        if self.gallery.currentItem() is item:
            run_async(lambda: QImage(path), self._show_preview, owner=self)

    # ---------------------------------------------------------------------------------------- gallery
    def _selected(self) -> str | None:
        item = self.gallery.currentItem()
        return item.data(PATH_ROLE) if item else None

    def _on_gallery_selection(self) -> None:
        has = self._selected() is not None
        for b in (self.save_button, self.open_button, self.copy_button):
            b.setEnabled(has)

    def _on_save(self) -> None:
        src = self._selected()
        if not src:
            return
        dest, _ = QFileDialog.getSaveFileName(self, "Save as", str(Path.home() / Path(src).name))
        if dest:
            run_async(lambda: shutil.copyfile(src, dest), lambda _: None,
                      lambda e: self._fail(f"Could not save {dest}: {e}"), owner=self)

    def _on_open(self) -> None:
        src = self._selected()
        if src:
            QDesktopServices.openUrl(QUrl.fromLocalFile(src))

    def _on_copy(self) -> None:
        src = self._selected()
        if not src:
            return

        def put(image: QImage) -> None:  # the file as a URL, and the pixels for apps that paste images
            mime = QMimeData()
            mime.setUrls([QUrl.fromLocalFile(src)])
            if not image.isNull():
                mime.setImageData(image)
            QGuiApplication.clipboard().setMimeData(mime)

        run_async(lambda: QImage(src), put, owner=self)
