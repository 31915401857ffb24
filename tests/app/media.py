"""Real media files for the attachment tests, built in a temp folder: a short video encoded with PyAV from a COCO
image, a video container with no frames, a truncated JPEG, a PNG whose header claims 200 megapixels (a few
hundred bytes on disk, like a real decompression bomb), a WAV tone, a file that is not an image at all."""

from __future__ import annotations

import math
import struct
import wave
import zlib
from pathlib import Path

import av
from PIL import Image


def video(path: Path, source_image: Path, frames: int = 12, size: tuple[int, int] = (96, 64)) -> Path:
    im = Image.open(source_image).convert("RGB").resize(size)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_image(im.rotate(i * 3))
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def video_without_frames(path: Path) -> Path:
    """A Matroska file with a video track header and not a single frame."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    return path


def truncated(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid PNG header for width×height (grey, 8 bit) followed by almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0"))
                     + chunk(b"IEND", b""))
    return path


def tone(path: Path, seconds: float = 1.5, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(n)))
    return path


def not_an_image(path: Path) -> Path:
    path.write_bytes(b"this is plain text pretending to be a PNG\n" * 20)
    return path
