"""Atomic file writes: a crash, a SIGKILL or a power cut mid-write leaves the old file or the new one, never half.

The data goes to a temporary file in the same folder (same filesystem, so the rename is atomic), is flushed
and fsync'ed, then renamed over the destination, and the folder is fsync'ed so the rename itself is durable.
Temporary files are named `.NAME.PID.part`: hidden, with no media extension (nothing that lists *.png picks one
up), and `sweep()` removes those whose writer process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PART = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{6}\.part$")


def part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(3)}.part")


@contextmanager
def replacing(dest: str | Path) -> Iterator[Path]:
    """`with replacing(path) as tmp:` write the whole file to `tmp`; on success it becomes `path` atomically.
    Writers that infer a format from the file name must be told the format (tmp ends in .part)."""
    dest = Path(dest)
    tmp = part_path(dest)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(dest: str | Path, data: bytes) -> Path:
    with replacing(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | Path, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sweep(folder: Path) -> int:
    """Delete temporary files left by writers that died mid-write; returns how many."""
    import psutil

    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for p in entries:
        m = _PART.match(p.name)
        if m and not psutil.pid_exists(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
