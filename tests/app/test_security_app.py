"""Safe defaults on the app side: an answer rendered as Markdown cannot load local or remote content or open a file
without a click; engine text is never markup; attachments stay inside their folder and respect the [limits]; and
during a chat session neither the app process nor its worker holds a socket another process could reach."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextDocument

from app import attachments
from app.attachments import AttachmentError, inspect
from app.markdown import image_allowed, link_allowed, safe_markdown, split_segments
from app.widgets.chat import ImageBlock, MessageWidget, open_link
from nexus_engine import paths, safety
from nexus_engine.bench import fuzz_cases as fc
from nexus_engine.config import limits

HOSTILE = [
    '<img src="/etc/hostname"> and <img src="file:///tmp/x.png">',
    "![secret](/home/user/private.png) inline ![remote](https://example.com/pixel.gif)",
    "[x][r]\n\n![y][r]\n\n[r]: /etc/passwd",
    "<script>alert(1)</script><iframe src=https://evil.example></iframe><style>*{display:none}</style>",
    '<a href="file:///etc/passwd">click</a> <link rel=stylesheet href=https://evil.example/x.css>',
    "<div>\n<img src=x onerror=alert(1)>\n</div>",
    "`<img src=/etc/hostname>` stays code, and so does ``a ` <b>``",
]


class _Recorder(QTextDocument):
    """A document that records every resource its layout asks for (what a QLabel would load)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def loadResource(self, kind: int, url: Any) -> Any:
        self.asked.append(url.toString())
        return super().loadResource(kind, url)


def _render(markdown: str) -> _Recorder:
    doc = _Recorder()
    doc.setMarkdown(markdown)
    doc.setTextWidth(400)
    doc.size()  # lay it out: images are loaded here
    return doc


def _images(doc: QTextDocument) -> int:
    found, block = 0, doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            found += it.fragment().charFormat().isImageFormat()
            it += 1
        block = block.next()
    return found


@pytest.mark.parametrize("text", HOSTILE)
def test_answers_cannot_load_anything_or_embed_markup(qapp: Any, text: str) -> None:
    doc = _render(safe_markdown(text))
    assert _images(doc) == 0 and doc.asked == [], (doc.asked, doc.toHtml()[:500])
    if "<" in text.split("`")[0]:
        assert "<" in doc.toPlainText()  # raw HTML is shown as text, not dropped
    for href in _hrefs(doc):  # links stay, but only open on a click, and only web/mail ones
        assert open_link(href) is False or link_allowed(href)


def test_the_sanitizer_is_what_stops_it(qapp: Any) -> None:
    raw = _render(HOSTILE[0] + "\n\n" + HOSTILE[1])
    assert _images(raw) > 0 and raw.asked  # unsanitized, Qt would load these files on its own


def _hrefs(doc: QTextDocument) -> list[str]:
    out, block = [], doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fmt = it.fragment().charFormat()
            if fmt.isAnchor():
                out.append(fmt.anchorHref())
            it += 1
        block = block.next()
    return out


def test_code_spans_and_blocks_are_kept_verbatim() -> None:
    assert safe_markdown("`a<b` x<y") == "`a<b` x&lt;y"
    assert safe_markdown("``` not closed <b>") == "``` not closed &lt;b>"
    assert [s.kind for s in split_segments("```html\n<img src=x>\n```")] == ["code"]


def test_only_web_and_mail_links_open(qapp: Any) -> None:
    for bad in ("file:///etc/passwd", "/etc/passwd", "javascript:alert(1)", "data:text/html,hi", "smb://host/x",
                "relative/path", ""):
        assert not link_allowed(bad) and open_link(bad) is False
    assert all(link_allowed(u) for u in ("https://example.com", "http://x.org/a", "mailto:a@b.c"))


def test_answer_bubbles_render_sanitized_markdown_and_plain_errors(qtbot: Any) -> None:
    w = MessageWidget("assistant", "hello <img src=/etc/hostname> and ![x](/home/u/a.png) inline")
    qtbot.addWidget(w)
    label = w.segment_widgets[0]
    assert label.textFormat() == Qt.TextFormat.MarkdownText and not label.openExternalLinks()
    assert "<img" not in label.text() and "\\![x]" in label.text()
    w.set_status("error", '<img src="/etc/hostname"> failed')
    assert w.note.textFormat() == Qt.TextFormat.PlainText and w.info.textFormat() == Qt.TextFormat.PlainText


def test_inline_images_only_from_the_data_folder(qtbot: Any, tmp_path: Path) -> None:
    inside = paths.data_dir() / "generated" / "ok.png"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_bytes(fc.image_bytes("PNG", (40, 30)))
    outside = tmp_path / "private.png"
    outside.write_bytes(fc.image_bytes("PNG", (40, 30)))
    link = paths.data_dir() / "generated" / "link.png"
    link.symlink_to(outside)
    roots = [paths.data_dir()]
    assert image_allowed(str(inside), roots)
    assert not image_allowed(str(outside), roots) and not image_allowed(str(link), roots)
    assert not image_allowed(str(paths.data_dir() / "generated" / ".." / ".." / "x.png"), roots)
    shown = ImageBlock(split_segments(f"![a]({inside})")[0])
    hidden = ImageBlock(split_segments(f"![b]({link})")[0])
    qtbot.addWidget(shown)
    qtbot.addWidget(hidden)
    assert shown.picture.pixmap() is not None and not shown.picture.pixmap().isNull()
    assert hidden.picture.pixmap().isNull() and "outside Nexus's data folder" in hidden.picture.text()


def test_attachments_are_stored_inside_the_store_even_with_a_planted_symlink(tmp_path: Path) -> None:
    import hashlib

    store = tmp_path / "store"
    store.mkdir()
    src = tmp_path / "a.png"
    src.write_bytes(fc.image_bytes("PNG", (20, 20)))
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"not yours")
    (store / f"{hashlib.sha256(src.read_bytes()).hexdigest()}.png").symlink_to(target)
    att = inspect(src, store)
    stored = Path(att.path)
    assert not stored.is_symlink() and stored.parent == store.resolve() and stored.read_bytes() == src.read_bytes()
    assert target.read_bytes() == b"not yours"


def test_attachment_limits_come_from_models_toml_and_headers(tmp_path: Path) -> None:
    paths.user_models_toml().write_text("[limits]\nimage_pixels = 1000\nvideo_seconds = 1\n")
    limits.reset()
    try:
        png = tmp_path / "big.png"
        png.write_bytes(fc.png_header(100, 100))  # 10,000 pixels claimed, no pixel data: refused from the header
        with pytest.raises(AttachmentError, match=r"limit is 0\.001 megapixels"):
            inspect(png, tmp_path / "store")
        mp4 = tmp_path / "long.mp4"
        mp4.write_bytes(fc.video_bytes(frames=24))  # 3 s
        with pytest.raises(AttachmentError, match="the video is 3 s long; the limit is 1 s"):
            inspect(mp4, tmp_path / "store")
    finally:
        limits.reset()
    assert attachments.ACCEPTED


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_a_chat_session_opens_no_reachable_socket(window: Any, qtbot: Any) -> None:
    window.composer.edit.setPlainText("Say hi.")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    worker = window.engine.client.worker_pid
    assert worker is not None
    for pid in (os.getpid(), worker):
        assert safety.reachable_sockets(pid) == [], f"pid {pid}: {safety.reachable_sockets(pid)}"
