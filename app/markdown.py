"""Split a (possibly half-streamed) Markdown answer into prose and fenced code blocks.

The chat view renders prose with Qt's own Markdown (QLabel, MarkdownText) and each code block as its own widget
with a copy button. Splitting is done here, as a pure function, so the view can update only the segment that
changed while an answer streams: earlier segments keep their text and are not re-rendered.

A fence still open at the end of a streamed text is a code segment with closed=False, so code shows up as code
while it is being written instead of as prose that jumps once the closing fence arrives.

A line that is only a local image, `![caption](/path/to/file.png)` (how the engine answers "draw …"), is an
image segment: text = the path, lang = the caption; the view shows the picture inline with its caption.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
