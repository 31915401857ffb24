"""Split a (possibly half-streamed) Markdown answer into prose and fenced code blocks.

The chat view renders prose with Qt's own Markdown (QLabel, MarkdownText) and each code block as its own widget
with a copy button. Splitting is done here, as a pure function, so the view can update only the segment that
changed while an answer streams: earlier segments keep their text and are not re-rendered.

A fence still open at the end of a streamed text is a code segment with closed=False, so code shows up as code
while it is being written instead of as prose that jumps once the closing fence arrives.

A line that is only a local image, `![caption](/path/to/file.png)` (how the engine answers "draw …"), is an
image segment: text = the path, lang = the caption; the view shows the picture inline only when the file is
inside Nexus's data folder (`image_allowed`), so an answer cannot make the window open any other local file.

Prose from the model is data, never markup the window acts on (`safe_markdown`): raw HTML is shown as text (Qt
would render `<img src=…>` and load local files without a click), and image syntax becomes a plain link, which
does nothing until clicked; the view opens only http(s) and mailto links (`link_allowed`), and only on a click.
Qt's rich text has no script engine, so nothing in an answer can run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

# CommonMark: up to 3 spaces of indent, then ``` or ~~~ (3 or more), then an optional info string
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
_IMAGE = re.compile(r"^!\[(?P<caption>[^\]]*)\]\((?P<path>/[^)]+\.(?:png|jpe?g|webp|gif))\)\s*$", re.I)


@dataclass(frozen=True)
class Segment:
    kind: str  # "text" | "code" | "image"
    text: str
    lang: str = ""
    closed: bool = True


def split_segments(markdown: str) -> list[Segment]:
    """Prose and code segments in order; empty prose between blocks is dropped."""
    out: list[Segment] = []
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    lang = ""
    for line in markdown.split("\n"):
        if not fence:
            m = _FENCE.match(line)
            image = _IMAGE.match(line)
            if m:
                _flush_prose(out, prose)
                fence, lang, code = m.group(1), m.group(2), []
            elif image:
                _flush_prose(out, prose)
                out.append(Segment("image", image.group("path"), image.group("caption")))
            else:
                prose.append(line)
            continue
        stripped = line.strip()
        # a closing fence uses the same character, at least as long, with nothing after it
        if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            out.append(Segment("code", "\n".join(code), lang, closed=True))
            fence = ""
        else:
            code.append(line)
    if fence:
        out.append(Segment("code", "\n".join(code), lang, closed=False))
    else:
        _flush_prose(out, prose)
    return out


def _flush_prose(out: list[Segment], prose: list[str]) -> None:
    text = "\n".join(prose).strip("\n")
    if text.strip():
        out.append(Segment("text", text))
    prose.clear()


# --------------------------------------------------------------------------------------------- safety
LINK_SCHEMES = ("http", "https", "mailto")
_TICKS = re.compile(r"`+")


def safe_markdown(text: str) -> str:
    """Markdown with raw HTML and images disarmed: `<` becomes `&lt;` and `![` becomes `\\![` (a link) outside code
    spans, whose text Markdown shows literally anyway."""
    out: list[str] = []
    i = 0
    while i < len(text):
        m = _TICKS.search(text, i)
        end = m.start() if m else len(text)
        out.append(_disarm(text[i:end]))
        if m is None:
            break
        # a code span runs to the next run of exactly as many backticks (CommonMark); unmatched ticks are text
        close = next((c for c in _TICKS.finditer(text, m.end()) if len(c.group()) == len(m.group())), None)
        stop = close.end() if close else m.end()
        out.append(text[m.start():stop])
        i = stop
    return "".join(out)


def _disarm(prose: str) -> str:
    return prose.replace("<", "&lt;").replace("![", "\\![")


def link_allowed(url: str) -> bool:
    """Links the chat opens (on a click): web pages and mail; never local files, scripts or data URLs."""
    return urlparse(url.strip()).scheme.lower() in LINK_SCHEMES


def image_allowed(path: str, roots: list[Path]) -> bool:
    """An inline image is shown only if, symlinks resolved, it lies inside one of `roots` (the data folder)."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(real.is_relative_to(r.resolve()) for r in roots)
