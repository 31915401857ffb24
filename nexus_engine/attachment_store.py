"""Files attached to a chat turn, stored under their content hash: `<data folder>/attachments/<sha256>.<ext>`.

A copy, not a link: the original may be edited, moved or deleted later, and the conversation must keep showing
(and re-sending, on regenerate) what was sent. The copy is written atomically and its name is built here, never
taken from outside; a symlink planted at that name is replaced, and the stored path is checked to lie inside the
store. The app (app/attachments.py, after decoding each file on a pool thread) and `nexus chat --attach` both
store files through here.
"""

from __future__ import annotations

import hashlib
import mimetypes
import shutil
from pathlib import Path
from typing import Any

from nexus_engine import atomic, paths, safety
from nexus_engine.errors import BadInputError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg"}
AUDIO_EXT = {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"}
ACCEPTED = ("images (PNG, JPEG, WebP, GIF, BMP, TIFF), videos (MP4, MKV, WebM, MOV, AVI) "
            "and audio (WAV, MP3, FLAC, OGG, M4A)")


def default_dir() -> Path:
    return paths.data_dir() / "attachments"


def kind_of(path: str | Path) -> str | None:
    """image | video | audio by extension; None for anything else."""
    ext = Path(path).suffix.lower()
    for kind, exts in (("image", IMAGE_EXT), ("video", VIDEO_EXT), ("audio", AUDIO_EXT)):
        if ext in exts:
            return kind
    return None


def store(src: Path, store_dir: Path) -> tuple[Path, str]:
    """Copy `src` to store_dir/<sha256><ext>; returns (stored path, sha256). BadInputError if it cannot be."""
    digest = hashlib.sha256()
    with Path(src).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    store_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(src).suffix.lower() if kind_of(src) else ""
    dest = store_dir / f"{sha}{suffix}"  # the name is ours: nothing from outside can put a '/' or '..' in it
    if dest.is_symlink():  # planted, not written here: it could point anywhere
        dest.unlink()
    if not dest.is_file():
        with atomic.replacing(dest) as tmp:  # the worker never sees half a file, nor does a power cut leave one
            shutil.copyfile(src, tmp)
    return safety.confine(dest, store_dir, "attachment"), sha


def attach(path: str | Path, store_dir: Path | None = None) -> dict[str, Any]:
    """Check one file the way the app's composer does before decoding, store it, and return the record
    ChatSession.send takes. The engine decodes it when the turn runs (a damaged file becomes a note there)."""
    p = Path(path).expanduser()
    name = p.name or str(p)
    if not p.exists():
        raise BadInputError(f"{name}: the file does not exist", f"check the path: {p}")
    if p.is_dir():
        raise BadInputError(f"{name}: is a folder", "attach the files inside it instead")
    kind = kind_of(p)
    if kind is None:
        raise BadInputError(f"{name}: unsupported file type {p.suffix or '(no extension)'}",
                            f"Nexus accepts {ACCEPTED}")
    size = p.stat().st_size
    if size == 0:
        raise BadInputError(f"{name}: the file is empty (0 bytes)")
    stored, sha = store(p, store_dir or default_dir())
    return {"path": str(stored), "kind": kind, "mime": mimetypes.guess_type(p.name)[0], "bytes": size,
            "sha256": sha, "meta": {"name": name}}
