"""Turn perception results into the report the chat model answers from.

The starter chat model (SmolLM2-135M) cannot see; it gets the files' descriptions as a report in the system
message, in a fixed shape — `[Image 1 (cat.jpg, 640x480): shows a cat (72%: tabby cat); no readable text]` —
and one instruction: use only the report, and say it cannot tell when the report does not answer. Of the
prompt shapes tried with SmolLM2-135M (the report in the user turn, longer instructions, a separate system
prompt), only this short one kept the tiny model answering about the image instead of reciting the notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nexus_engine.vision.describe import ImageDescription

if TYPE_CHECKING:
    from nexus_engine.vision.service import Described

# the wording SmolLM2-135M followed best (longer instructions it recited back instead of answering)
REPORT = "The user attached {what}. An image classifier reported: {notes}. Use only this report. " \
         "If the report does not say, answer that you cannot tell."


def note(i: int, d: Described, name: str | None = None) -> str:
    """`[Image 1 (name, WxH): sentence]` — the compact, faithful form of one file's description. name: the
    user's file name (a stored copy is named by its hash)."""
    label = "Video" if d.kind == "video" else "Image"
    desc = d.description
    size = f", {desc.width}x{desc.height}" if isinstance(desc, ImageDescription) and desc.width else ""
    return f"[{label} {i} ({name or Path(d.path).name}{size}): {d.sentence()}]"


def unseen_note(i: int, path: str, kind: str, name: str | None = None) -> str:
    label = "Video" if kind == "video" else "Image"
    return (f"[{label} {i} ({name or Path(path).name}): no vision tower is installed in this profile, so nothing "
            "was seen]")


def with_notes(messages: list[dict[str, str]], notes: list[str]) -> list[dict[str, str]]:
    """The conversation with the perception report in its system message."""
    if not notes:
        return messages
    what = "an image" if len(notes) == 1 and notes[0].startswith("[Image") else f"{len(notes)} files"
    return with_report(messages, REPORT.format(what=what, notes=" ".join(notes)))


def with_report(messages: list[dict[str, str]], report: str) -> list[dict[str, str]]:
    """The conversation with `report` in its system message (added at the start if there is none: several chat
    templates accept a system message only there). Audio transcripts (voice/attached.py) use it too."""
    out = [dict(m) for m in messages]
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{report}"
    else:
        out.insert(0, {"role": "system", "content": report})
    return out
