"""The chat view: one bubble per message, answers rendered as Markdown while they stream.

A bubble's body is a list of segments (app/markdown.py): prose as a Markdown QLabel, each fenced code block as a
monospace block with its own Copy button. While an answer streams only the segments whose text changed are
touched (usually just the last), and the owner throttles updates (MainWindow renders at most every ~40 ms), so
the cost per update stays small however long the answer grows.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QMimeData, Qt, QUrl, Signal
from PySide6.QtGui import (
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QFontDatabase,
    QGuiApplication,
    QImage,
    QPixmap,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.markdown import Segment, image_allowed, link_allowed, safe_markdown, split_segments
from nexus_engine import paths

SELECTABLE = Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.LinksAccessibleByMouse
PLAIN = Qt.TextFormat.PlainText  # engine and error text is shown as typed: a "<img …>" in it is not markup


def open_link(url: str) -> bool:
    """A clicked link in an answer: web and mail links open in the user's programs, anything else does not."""
    if not link_allowed(url):
        return False
    return QDesktopServices.openUrl(QUrl(url))


def image_roots() -> list[Any]:
    """Where inline images in answers may come from: Nexus's data folder (generated images, attachments)."""
    return [paths.data_dir()]


CONSOLIDATION = {"projector": "image via trained projector", "text": "image via text notes"}


def format_info(stats: dict[str, Any], route: list[str] | None = None) -> str:
    """The line under an answer: towers used, tokens, speed, time to first token, total time."""
    parts = []
    towers = list(route or [])
    for name in [*(stats.get("towers") or []), stats.get("tower")]:  # every tower that worked on it, once
        if name and name not in towers:
            towers.append(str(name))
    if towers:
        parts.append(" + ".join(towers))
    if stats.get("consolidation") in CONSOLIDATION:  # which path combined an image (or audio) with the chat model
        what = CONSOLIDATION[stats["consolidation"]]
        parts.append(what.replace("image", "audio") if stats.get("consolidation_modality") == "audio" else what)
    heard = stats.get("heard") or []
    if heard:  # audio attachments reach the chat model as transcripts (voice/attached.py)
        parts.append("audio via transcript" if len(heard) == 1 else f"{len(heard)} audio files via transcripts")
    if stats.get("tokens"):
        parts.append(f"{stats['tokens']} tokens")
    if stats.get("decode_tok_s"):
        parts.append(f"{stats['decode_tok_s']:.0f} tok/s")
    if stats.get("ttft_ms") is not None and stats.get("tokens"):
        parts.append(f"first token {stats['ttft_ms']:.0f} ms")
    if stats.get("total_ms"):
        parts.append(f"{stats['total_ms'] / 1000:.1f} s")
    if stats.get("load_ms"):
        parts.append(f"loaded in {stats['load_ms']:.0f} ms")
    return " · ".join(parts)


class CodeBlock(QFrame):
    """A fenced code block: language, a Copy button, and the code in a horizontally scrolling label."""

    def __init__(self, segment: Segment, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codeBlock")
        self.lang = QLabel(segment.lang or "code", objectName="codeHeader")
        self.copy_button = QToolButton(text="Copy", toolTip="Copy this code to the clipboard")
        self.code = QLabel(textFormat=Qt.TextFormat.PlainText, textInteractionFlags=SELECTABLE)
        self.code.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        self.scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.code)
        header = QHBoxLayout()
        header.addWidget(self.lang)
        header.addStretch(1)
        header.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 6)
        layout.addLayout(header)
        layout.addWidget(self.scroll)
        self.copy_button.clicked.connect(self._on_copy)
        self.segment = segment
        self.update_segment(segment)

    def update_segment(self, segment: Segment) -> None:
        self.segment = segment
        self.lang.setText((segment.lang or "code") + ("" if segment.closed else "  (writing…)"))
        self.code.setText(segment.text)
        bar = self.scroll.horizontalScrollBar().sizeHint().height()
        self.scroll.setFixedHeight(self.code.sizeHint().height() + bar + 4)

    def _on_copy(self) -> None:
        QGuiApplication.clipboard().setText(self.segment.text)
        self.copy_button.setText("Copied")


class ImageBlock(QFrame):
    """A generated image inline in an answer, with its caption (model · seed · steps) under it."""

    MAX_SIDE = 384

    def __init__(self, segment: Segment, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("imageBlock")
        self.picture = QLabel()
        self.caption = QLabel(objectName="msgInfo", textInteractionFlags=SELECTABLE, textFormat=PLAIN)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.picture)
        layout.addWidget(self.caption)
        self.update_segment(segment)

    def update_segment(self, segment: Segment) -> None:
        self.segment = segment
        if not image_allowed(segment.text, image_roots()):  # an answer cannot make the window open other files
            self.picture.setText(f"(image not shown: {segment.text} is outside Nexus's data folder)")
            self.picture.setTextFormat(PLAIN)
            self.picture.setToolTip(segment.text)
            self.caption.setText(segment.lang)
            return
        pixmap = QPixmap(segment.text)
        if pixmap.isNull():
            self.picture.setText(f"(the image {segment.text} is missing)")
        else:
            if max(pixmap.width(), pixmap.height()) > self.MAX_SIDE:
                pixmap = pixmap.scaled(self.MAX_SIDE, self.MAX_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                       Qt.TransformationMode.SmoothTransformation)
            self.picture.setPixmap(pixmap)
        self.picture.setToolTip(segment.text)
        self.caption.setText(segment.lang)


class MessageWidget(QFrame):
    """One message. Assistant messages stream (set_text), end with a status, and show per-message info."""

    regenerate_requested = Signal(int)  # message id

    def __init__(self, role: str, text: str = "", message_id: int | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.message_id = message_id
        self.text = ""
        self.status = "done"
        self.setObjectName("userBubble" if role == "user" else "assistantBubble")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.who = QLabel("You" if role == "user" else "Nexus" if role == "assistant" else "System")
        self.who.setStyleSheet("font-weight: bold;")
        self.thumbs = QHBoxLayout()
        self.thumbs.addStretch(1)
        self.body = QVBoxLayout()
        self.body.setSpacing(6)
        self.segment_widgets: list[QWidget] = []
        self.note = QLabel(objectName="inlineError", wordWrap=True, textInteractionFlags=SELECTABLE, textFormat=PLAIN)
        self.note.hide()
        self.info = QLabel(objectName="msgInfo", textInteractionFlags=SELECTABLE, textFormat=PLAIN)
        self.info.hide()
        self.copy_button = QToolButton(text="Copy", toolTip="Copy the whole message")
        self.regen_button = QToolButton(text="Regenerate", toolTip="Ask again (Ctrl+R); the old answer is kept")
        self.regen_button.hide()
        actions = QHBoxLayout()
        actions.addWidget(self.info)
        actions.addStretch(1)
        actions.addWidget(self.copy_button)
        actions.addWidget(self.regen_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.addWidget(self.who)
        layout.addLayout(self.thumbs)
        layout.addLayout(self.body)
        layout.addWidget(self.note)
        layout.addLayout(actions)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text))
        self.regen_button.clicked.connect(self._on_regenerate)
        self.set_text(text)

    # ------------------------------------------------------------------------------------- content
    def set_text(self, text: str) -> None:
        """Render `text`; only segments that changed are touched."""
        self.text = text
        # the user's words are shown as typed, not interpreted as Markdown
        segments = split_segments(text) if self.role != "user" else [Segment("text", text)] if text else []
        for i, seg in enumerate(segments):
            if i < len(self.segment_widgets):
                widget = self.segment_widgets[i]
                old: Segment | None = getattr(widget, "segment", None)
                if old == seg:
                    continue
                if old is not None and old.kind == seg.kind:
                    self._update(widget, seg)
                    continue
                self._drop_from(i)
            self._append(seg)
        if len(self.segment_widgets) > len(segments):
            self._drop_from(len(segments))

    def _append(self, seg: Segment) -> None:
        if seg.kind == "code":
            widget: QWidget = CodeBlock(seg)
        elif seg.kind == "image":
            widget = ImageBlock(seg)
        else:
            fmt = Qt.TextFormat.PlainText if self.role == "user" else Qt.TextFormat.MarkdownText
            widget = QLabel(textFormat=fmt, wordWrap=True, textInteractionFlags=SELECTABLE, openExternalLinks=False)
            widget.linkActivated.connect(open_link)  # only on a click, only http(s)/mailto
            widget.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
            self._update(widget, seg)
        widget.segment = seg  # type: ignore[attr-defined]
        self.body.addWidget(widget)
        self.segment_widgets.append(widget)

    @staticmethod
    def _update(widget: QWidget, seg: Segment) -> None:
        if isinstance(widget, CodeBlock | ImageBlock):
            widget.update_segment(seg)
        else:
            assert isinstance(widget, QLabel)
            markdown = widget.textFormat() == Qt.TextFormat.MarkdownText
            widget.setText(safe_markdown(seg.text) if markdown else seg.text)
        widget.segment = seg  # type: ignore[attr-defined]

    def _drop_from(self, index: int) -> None:
        for widget in self.segment_widgets[index:]:
            self.body.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        del self.segment_widgets[index:]

    def add_thumbnail(self, image: QImage, tooltip: str) -> None:
        label = QLabel(toolTip=tooltip)
        label.setPixmap(QPixmap.fromImage(image).scaled(120, 120, Qt.AspectRatioMode.KeepAspectRatio,
                                                        Qt.TransformationMode.SmoothTransformation))
        self.thumbs.insertWidget(self.thumbs.count() - 1, label)

    def add_file_chip(self, text: str) -> None:
        self.thumbs.insertWidget(self.thumbs.count() - 1, QLabel(text, objectName="chip"))

    # -------------------------------------------------------------------------------------- status
    def set_status(self, status: str, error: str | None = None, stats: dict[str, Any] | None = None,
                   route: list[str] | None = None) -> None:
        self.status = status
        notes = {"cancelled": "Stopped. The text so far is kept.",
                 "interrupted": error or "The engine stopped while writing this answer.",
                 "error": error or "The engine could not answer.", "streaming": ""}
        note = notes.get(status, "")
        if status == "streaming" and not self.text:
            note = "thinking…"
        self.note.setObjectName("msgInfo" if status in ("cancelled", "streaming") else "inlineError")
        self.note.style().unpolish(self.note)  # the style sheet selects on objectName: apply it again
        self.note.style().polish(self.note)
        self.note.setText(note)
        self.note.setVisible(bool(note))
        info = format_info(stats or {}, route)
        self.info.setText(info)
        self.info.setVisible(bool(info))

    def set_progress(self, text: str) -> None:
        """A running step shown under the answer ("describing image 1/2", "drawing: step 3/28 · 12 s left")."""
        self.note.setObjectName("msgInfo")
        self.note.style().unpolish(self.note)
        self.note.style().polish(self.note)
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def set_regenerate_visible(self, visible: bool) -> None:
        self.regen_button.setVisible(visible and self.role == "assistant" and self.message_id is not None)

    def _on_regenerate(self) -> None:
        if self.message_id is not None:
            self.regenerate_requested.emit(self.message_id)


class ChatView(QScrollArea):
    """The conversation: bubbles top to bottom; files dropped here go to the composer (`files_dropped`)."""

    files_dropped = Signal(QMimeData)
    regenerate_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setAcceptDrops(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        self.column = QVBoxLayout(inner)
        self.column.setContentsMargins(12, 12, 12, 12)
        self.column.setSpacing(10)
        self.empty = QLabel("Ask anything, or drop images, videos and audio here.", objectName="hint",
                            alignment=Qt.AlignmentFlag.AlignCenter)
        self.column.addWidget(self.empty)
        self.column.addStretch(1)
        self.setWidget(inner)
        self.messages: list[MessageWidget] = []
        self._stick = True  # follow the stream while the user is at the bottom
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)

    def clear(self) -> None:
        for m in self.messages:
            self.column.removeWidget(m)
            m.hide()
            m.deleteLater()
        self.messages.clear()
        self.empty.show()
        self._stick = True

    def add_message(self, role: str, text: str = "", message_id: int | None = None) -> MessageWidget:
        widget = MessageWidget(role, text, message_id)
        widget.regenerate_requested.connect(self.regenerate_requested)
        self.column.insertWidget(self.column.count() - 1, widget)
        self.messages.append(widget)
        self.empty.hide()
        self._stick = True
        return widget

    def remove_message(self, widget: MessageWidget) -> None:
        if widget in self.messages:
            self.messages.remove(widget)
            self.column.removeWidget(widget)
            widget.hide()
            widget.deleteLater()

    def last_answer(self) -> MessageWidget | None:
        return next((m for m in reversed(self.messages) if m.role == "assistant"), None)

    def mark_last_answer(self, can_regenerate: bool) -> None:
        last = self.last_answer()
        for m in self.messages:
            m.set_regenerate_visible(can_regenerate and m is last)

    # ----------------------------------------------------------------------------------- scrolling
    def _on_range_changed(self, _min: int, maximum: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(maximum)

    def _on_scrolled(self, value: int) -> None:
        self._stick = value >= self.verticalScrollBar().maximum() - 24

    # ------------------------------------------------------------------------------- drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        self.files_dropped.emit(event.mimeData())
        event.acceptProposedAction()
