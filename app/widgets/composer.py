"""The composer: a text box, an attach button, drag-and-drop and paste of files and images, a strip of
thumbnails (each with a remove button), an inline message line, and Send / Stop.

Files are checked and decoded on a pool thread (app/attachments.py via app/tasks.py); a chip shows
"checking…" meanwhile and gets its thumbnail, or disappears with an inline message saying what was wrong.
Enter sends, Shift+Enter starts a new line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage, QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import attachments
from app.attachments import Attachment
from app.tasks import run_async

FILE_FILTER = ("Images, videos and audio (*.png *.jpg *.jpeg *.webp *.gif *.bmp *.tif *.tiff *.mp4 *.m4v *.mkv "
               "*.webm *.mov *.avi *.wav *.mp3 *.flac *.ogg *.opus *.m4a);;All files (*)")


def local_files(mime: QMimeData) -> list[Path]:
    return [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]


class ComposerEdit(QPlainTextEdit):
    submit = Signal()
    files_given = Signal(QMimeData)  # pasted or dropped files / images

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submit.emit()
            return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return bool(local_files(source)) or source.hasImage() or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        if local_files(source) or source.hasImage():
            self.files_given.emit(source)
        else:
            super().insertFromMimeData(source)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_files(event.mimeData()) or event.mimeData().hasImage():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: Any) -> None:
        if local_files(event.mimeData()) or event.mimeData().hasImage():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        if local_files(event.mimeData()) or event.mimeData().hasImage():
            self.files_given.emit(event.mimeData())
            event.acceptProposedAction()
        else:
            super().dropEvent(event)


class AttachmentChip(QFrame):
    """One attached file: thumbnail (or "checking…"), name, and a remove button."""

    remove_requested = Signal(object)

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("chip")
        self.name = name
        self.attachment: Attachment | None = None
        self.thumb = QLabel("checking…", alignment=Qt.AlignmentFlag.AlignCenter)
        self.thumb.setFixedSize(64, 64)
        self.label = QLabel(name if len(name) <= 22 else name[:19] + "…", toolTip=name)
        self.remove = QToolButton(text="✕", toolTip=f"Remove {name}")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.thumb)
        layout.addWidget(self.label)
        layout.addWidget(self.remove)
        self.remove.clicked.connect(lambda: self.remove_requested.emit(self))

    @property
    def ready(self) -> bool:
        return self.attachment is not None

    def set_attachment(self, att: Attachment) -> None:
        self.attachment = att
        self.name = att.name
        self.label.setText(att.name if len(att.name) <= 22 else att.name[:19] + "…")
        self.label.setToolTip(_describe(att))
        if att.thumbnail is not None:
            self.thumb.setPixmap(QPixmap.fromImage(att.thumbnail).scaled(
                64, 64, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
        else:
            self.thumb.setText(att.kind)


class Composer(QWidget):
    send_requested = Signal(str, list)  # text, [Attachment]
    stop_requested = Signal()
    attachments_changed = Signal()

    def __init__(self, store: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.chips: list[AttachmentChip] = []
        self.busy = False
        self.edit = ComposerEdit(placeholderText="Message Nexus… (Enter to send, Shift+Enter for a new line)")
        self.edit.setFixedHeight(84)
        self.edit.setAcceptDrops(True)
        self.setAcceptDrops(True)
        self.attach_button = QPushButton("Attach…", toolTip="Attach images, videos or audio (or drop / paste them)")
        self.send_button = QPushButton("Send", toolTip="Send (Enter or Ctrl+Enter)", default=True)
        self.stop_button = QPushButton("Stop", toolTip="Stop the answer (Esc)")
        self.stop_button.hide()
        self.strip = QHBoxLayout()
        self.strip.addStretch(1)
        self.errors = QLabel(objectName="inlineError", wordWrap=True, textFormat=Qt.TextFormat.PlainText,
                             textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.errors.hide()
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.attach_button)
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.edit, 1)
        row.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.strip)
        layout.addWidget(self.errors)
        layout.addLayout(row)
        self.edit.submit.connect(self.submit)
        self.edit.files_given.connect(self.add_mime)
        self.send_button.clicked.connect(self.submit)
        self.stop_button.clicked.connect(self.stop_requested)
        self.attach_button.clicked.connect(self._on_attach_clicked)

    # ---------------------------------------------------------------------------------------- files
    def add_mime(self, mime: QMimeData) -> None:
        paths = local_files(mime)
        if paths:
            self.add_paths(paths)
        elif mime.hasImage():
            self.add_image(QImage(mime.imageData()))
        elif mime.hasUrls():
            self.show_error("Only files on this computer can be attached (not web links).")

    def add_paths(self, paths: list[Path]) -> None:
        self.clear_errors()
        for p in paths:
            chip = self._new_chip(p.name or str(p))
            run_async(lambda p=p: attachments.inspect(p, self.store), lambda att, c=chip: self._on_ready(c, att),
                      lambda err, c=chip: self._on_failed(c, err), owner=chip)

    def add_image(self, image: QImage) -> None:
        self.clear_errors()
        chip = self._new_chip("pasted image")
        run_async(lambda: attachments.inspect_pasted(image, self.store), lambda att: self._on_ready(chip, att),
                  lambda err: self._on_failed(chip, err), owner=chip)

    def _new_chip(self, name: str) -> AttachmentChip:
        chip = AttachmentChip(name)
        chip.remove_requested.connect(self._remove_chip)
        self.strip.insertWidget(self.strip.count() - 1, chip)
        self.chips.append(chip)
        self.attachments_changed.emit()
        return chip

    def _on_ready(self, chip: AttachmentChip, att: Attachment) -> None:
        if chip in self.chips:
            chip.set_attachment(att)
            self.attachments_changed.emit()

    def _on_failed(self, chip: AttachmentChip, err: Exception) -> None:
        if chip not in self.chips:
            return
        text = str(err) if isinstance(err, attachments.AttachmentError) else f"{chip.name}: could not read it ({err})"
        self._remove_chip(chip)
        self.show_error(text)

    def _remove_chip(self, chip: AttachmentChip) -> None:
        if chip in self.chips:
            self.chips.remove(chip)
            self.strip.removeWidget(chip)
            chip.hide()  # at once: deleteLater waits for the event loop, and the chip is out of the layout
            chip.deleteLater()
            self.attachments_changed.emit()

    def _on_attach_clicked(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "Attach files", str(Path.home()), FILE_FILTER)
        if names:
            self.add_paths([Path(n) for n in names])

    @property
    def pending(self) -> int:
        return sum(1 for c in self.chips if not c.ready)

    @property
    def ready_attachments(self) -> list[Attachment]:
        return [c.attachment for c in self.chips if c.attachment is not None]

    # ------------------------------------------------------------------------------------- messages
    def show_error(self, text: str) -> None:
        lines = [ln for ln in self.errors.text().split("\n") if ln] if self.errors.isVisible() else []
        self.errors.setText("\n".join([*lines, text]))
        self.errors.show()

    def clear_errors(self) -> None:
        self.errors.clear()
        self.errors.hide()

    # ------------------------------------------------------------------------------------- sending
    def submit(self) -> None:
        if self.busy:
            return
        text = self.edit.toPlainText()
        if not text.strip():
            self.clear_errors()
            self.show_error("The message is empty: type a question or a description of what to do with the files.")
            return
        if self.pending:
            self.show_error(f"Still checking {self.pending} file(s); send again in a moment.")
            return
        self.clear_errors()
        self.send_requested.emit(text, self.ready_attachments)

    def clear_sent(self) -> None:
        """The message was accepted: empty the box and the strip (the files stay in the data folder)."""
        self.edit.clear()
        for chip in list(self.chips):
            self._remove_chip(chip)

    def restore(self, text: str, atts: list[Attachment], why: str) -> None:
        """Sending failed: put the message back so nothing typed is lost, and say why."""
        if not self.edit.toPlainText().strip():
            self.edit.setPlainText(text)
        for att in atts:
            self._new_chip(att.name).set_attachment(att)
        self.show_error(why)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.send_button.setVisible(not busy)
        self.stop_button.setVisible(busy)

    # -------------------------------------------------------------------------------- drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        self.add_mime(event.mimeData())
        event.acceptProposedAction()


def _describe(att: Attachment) -> str:
    m = att.meta
    if att.kind == "image":
        return f"{att.name}: {m.get('width')}×{m.get('height')} {m.get('format', '')}"
    if att.kind == "video":
        return f"{att.name}: {m.get('width')}×{m.get('height')}, {m.get('duration_s', 0):.1f} s, {m.get('codec', '')}"
    return f"{att.name}: {m.get('duration_s', 0):.1f} s audio, {m.get('sample_rate')} Hz"
