"""Audio files for the voice stages: decoded with PyAV to 16 kHz mono float32, as a whole or as it goes.

Any container and codec FFmpeg reads, at any rate and channel count. Length is checked against models.toml
[limits] audio_seconds from the header before anything is decoded, and again as samples arrive (a header may
say less, or nothing). An unreadable, corrupt or over-long file is a BadInputError naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine.errors import BadInputError
from nexus_engine.voice.audio_io import RATE


def decode_file(path: str | Path) -> np.ndarray:
    """A whole audio file -> 16 kHz mono float32; unreadable files are a clear BadInputError."""
    return np.concatenate(list(decode_chunks(path, 600.0)) or [np.zeros(0, dtype=np.float32)])


def decode_chunks(path: str | Path, chunk_s: float) -> Any:
    """Yield 16 kHz mono float32 blocks of about `chunk_s` seconds, decoding the file as it goes (an hour-long
    file is never in memory at once)."""
    import av

    from nexus_engine.config import limits

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"no such audio file: {p}")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise BadInputError(f"{p.name} is not a readable audio file ({e})",
                            "convert it to WAV, FLAC, MP3 or OGG; the file may be truncated or corrupt") from e
    longest = limits.active().audio_seconds
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise BadInputError(f"{p.name} has no audio stream")
        _check_length(p.name, _header_seconds(container, streams[0]), longest)  # before decoding anything
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        want = int(chunk_s * RATE)
        parts: list[np.ndarray] = []
        have = decoded = 0
        try:
            for frame in container.decode(streams[0]):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    have += parts[-1].size
                    decoded += parts[-1].size
                _check_length(p.name, decoded / RATE, longest)  # a header that said less (or nothing)
                if have >= want:
                    block = np.concatenate(parts)
                    yield block[:want]
                    parts, have = [block[want:]], block.size - want
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as e:
            raise BadInputError(f"{p.name} is corrupt after {have / RATE:.1f} s of audio ({e})",
                                "re-export or re-download the file") from e
        rest = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        while rest.size:
            yield rest[:want]
            rest = rest[want:]


def _header_seconds(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return float(container.duration / 1e6) if container.duration else 0.0


def _check_length(name: str, seconds: float, longest: float) -> None:
    if seconds > longest:
        raise BadInputError(f"{name}: the audio is {_span(seconds)} long; the limit is {_span(longest)}",
                            "cut it shorter, or raise audio_seconds in [limits] of your models.toml")


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def probe_duration(path: str | Path) -> float:
    """Seconds of audio in a file (from its header; 0.0 when the container does not say)."""
    import av

    try:
        with av.open(str(path)) as c:
            s = next((s for s in c.streams if s.type == "audio"), None)
            if s is not None and s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
            return float(c.duration / 1e6) if c.duration else 0.0
    except (av.error.FFmpegError, OSError, ValueError):
        return 0.0
