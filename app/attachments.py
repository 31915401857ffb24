"""Check, decode and store files the user attaches: images (Pillow), videos (PyAV) and audio (PyAV).

Everything here runs on a pool thread (see `app/tasks.py`), never on the UI thread: decoding a large JPEG or
opening a video can take longer than a frame. Each file is fully checked before it is accepted (an image is
decoded, a video must yield a frame, audio must yield samples) so the engine never receives a file it would
choke on, and every refusal is an AttachmentError whose text names the file and says what to do.

Accepted files are copied into the data folder under their content hash (`attachments/<sha256>.<ext>`): the
worker reads them from there, the history keeps pointing at them after the original is moved or deleted, and
attaching the same file twice stores it once. Pasted images, which have no file, are saved there as PNG. The copy
is written atomically (temp + fsync + rename) and its name is built here, never taken from outside; a symlink
planted at that name is replaced, and the stored path is checked to lie inside the attachments folder.

Limits (models.toml [limits], the same values the worker enforces): image pixels from the header before decoding,
audio and video length from the container's metadata before decoding.
"""

from __future__ import annotations

import mimetypes
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage, QPainter

from nexus_engine import attachment_store
from nexus_engine.attachment_store import ACCEPTED
from nexus_engine.config import limits
from nexus_engine.errors import NexusError

MAX_BYTES = 4 * 1024**3
THUMB = 160  # thumbnail edge, pixels
AUDIO_PEAKS_S = 30.0  # seconds of audio drawn in the waveform thumbnail


class AttachmentError(Exception):
    """A file that cannot be attached; str() is the message shown inline under the composer."""


@dataclass
class Attachment:
    path: str  # the stored copy the worker reads (absolute)
    kind: str  # image | video | audio
    name: str  # the original file name, shown on the chip
    mime: str | None
    bytes: int
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)  # width/height, duration_s, frames, fps, sample_rate
    thumbnail: QImage | None = None

    def record(self) -> dict[str, Any]:
        """What ChatSession.send stores with the message (history.add_attachment's fields)."""
        return {"path": self.path, "kind": self.kind, "mime": self.mime, "bytes": self.bytes,
                "sha256": self.sha256, "meta": {"name": self.name, **self.meta}}


kind_of = attachment_store.kind_of


def inspect(path: str | Path, store: Path) -> Attachment:
    """Check and decode one file, copy it into `store`; raises AttachmentError with a clear message."""
    p = Path(path)
    name = p.name or str(p)
    if not p.exists():
        raise AttachmentError(f"{name}: the file does not exist (was it moved?)")
    if p.is_dir():
        raise AttachmentError(f"{name}: is a folder; attach the files inside it instead")
    kind = kind_of(p)
    if kind is None:
        ext = p.suffix or "(no extension)"
        raise AttachmentError(f"{name}: unsupported file type {ext}. Nexus accepts {ACCEPTED}.")
    size = p.stat().st_size
    if size == 0:
        raise AttachmentError(f"{name}: the file is empty")
    if size > MAX_BYTES:
        raise AttachmentError(f"{name}: {size / 1024**3:.1f} GiB is more than the {MAX_BYTES // 1024**3} GiB limit")
    decode = {"image": _image, "video": _video, "audio": _audio}[kind]
    meta, thumb = decode(p, name)
    stored, sha = _store(p, store)
    return Attachment(str(stored), kind, name, mimetypes.guess_type(p.name)[0], size, sha, meta, thumb)


def thumbnail_for(path: str | Path, kind: str) -> QImage:
    """The chip/bubble thumbnail of a stored attachment (a conversation reopened from the history)."""
    p = Path(path)
    decode = {"image": _image, "video": _video, "audio": _audio}.get(kind)
    if decode is None:
        raise AttachmentError(f"{p.name}: no preview for {kind} files")
    if not p.exists():
        raise AttachmentError(f"{p.name}: the stored copy is gone")
    return decode(p, p.name)[1]


def inspect_pasted(image: QImage, store: Path) -> Attachment:
    """A pasted image has no file: write it as PNG, then check and store it like any other."""
    if image.isNull():
        raise AttachmentError("the pasted image could not be read")
    store.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=store, prefix=".pasted-", suffix=".png")
    os.close(fd)
    try:
        if not image.save(tmp, "PNG"):
            raise AttachmentError("the pasted image could not be saved")
        found = inspect(tmp, store)
    finally:
        Path(tmp).unlink(missing_ok=True)
    found.name = "pasted image.png"
    return found


# ------------------------------------------------------------------------------------------- decoders
def _image(p: Path, name: str) -> tuple[dict[str, Any], QImage]:
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a damaged image must fail here, not show half a picture
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > limits.active().image_pixels:  # from the header: nothing decoded yet
                raise AttachmentError(_too_big(name, w * h))
            fmt = im.format or "image"
            frames = getattr(im, "n_frames", 1)
            im.load()  # decode fully: a truncated file fails here, not in the engine
            thumb = im.copy()
    except Image.DecompressionBombError as e:  # Pillow refuses to even open > ~179 MP
        raise AttachmentError(_too_big(name, _pixels_in(str(e)))) from e
    except UnidentifiedImageError as e:
        raise AttachmentError(f"{name}: not a readable image (the file is damaged or not really an image)") from e
    except OSError as e:
        raise AttachmentError(f"{name}: the image is damaged or incomplete ({e}); save or download it again") from e
    thumb.thumbnail((THUMB, THUMB))
    return {"width": w, "height": h, "format": fmt, "frames": frames}, _qimage(thumb)


def _video(p: Path, name: str) -> tuple[dict[str, Any], QImage]:
    import av  # imported here: PyAV loads FFmpeg's libraries, only needed once a video is attached

    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise AttachmentError(f"{name}: the file has no video frames (no video stream)")
            stream = container.streams.video[0]
            _check_video(name, container, stream)
            stream.thread_type = "AUTO"
            frame = next(container.decode(stream), None)
            if frame is None:
                raise AttachmentError(f"{name}: the video has no frames")
            duration = (container.duration or 0) / 1_000_000
            fps = float(stream.average_rate) if stream.average_rate else None
            meta = {"width": frame.width, "height": frame.height, "duration_s": round(duration, 3),
                    "fps": fps, "frames": stream.frames or (round(duration * fps) if fps else None),
                    "codec": stream.codec_context.name}
            thumb = frame.to_image()
    except AttachmentError:
        raise
    except EOFError as e:  # FFmpeg found a header but the file ends before any frame
        raise AttachmentError(f"{name}: the video has no frames (the file ends before the first one)") from e
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AttachmentError(f"{name}: not a readable video ({e})") from e
    thumb.thumbnail((THUMB, THUMB))
    return meta, _qimage(thumb)


def _audio(p: Path, name: str) -> tuple[dict[str, Any], QImage]:
    import av
    import numpy as np

    peaks: list[float] = []
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise AttachmentError(f"{name}: the file has no audio stream")
            stream = container.streams.audio[0]
            _check_seconds(name, "audio", _header_seconds(container, stream), limits.active().audio_seconds)
            rate = stream.rate or 0
            resampler = av.AudioResampler(format="flt", layout="mono", rate=8000)
            seen = 0.0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    peaks.extend(np.abs(samples).reshape(-1)[:: 80].tolist())  # ~100 values per second
                    seen += out.samples / 8000
                if seen >= AUDIO_PEAKS_S:
                    break
            duration = (container.duration or 0) / 1_000_000 or seen
    except AttachmentError:
        raise
    except EOFError as e:
        raise AttachmentError(f"{name}: the audio file has no samples") from e
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AttachmentError(f"{name}: not a readable audio file ({e})") from e
    if not peaks:
        raise AttachmentError(f"{name}: the audio file has no samples")
    return {"duration_s": round(duration, 3), "sample_rate": rate}, _waveform(peaks)


# -------------------------------------------------------------------------------------------- helpers
def _too_big(name: str, pixels: int | None) -> str:
    size = f"{pixels / 1e6:.0f} megapixels" if pixels else "too many pixels"
    return (f"{name}: the image is {size}; the limit is {limits.active().image_pixels / 1e6:g} megapixels. "
            "Scale it down first.")


def _header_seconds(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / 1_000_000


def _check_seconds(name: str, what: str, seconds: float, longest: float) -> None:
    if seconds > longest:
        raise AttachmentError(f"{name}: the {what} is {_span(seconds)} long; the limit is {_span(longest)}. "
                              "Cut it shorter first.")


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _check_video(name: str, container: Any, stream: Any) -> None:
    """Length and frame size from the container's metadata, before a frame is decoded."""
    lim = limits.active()
    _check_seconds(name, "video", _header_seconds(container, stream), lim.video_seconds)
    w, h = stream.codec_context.width or 0, stream.codec_context.height or 0
    if w * h > lim.image_pixels:
        raise AttachmentError(f"{name}: the video's frames are {w}x{h}; the limit is "
                              f"{lim.image_pixels / 1e6:g} megapixels. Scale it down first.")


def _pixels_in(message: str) -> int | None:
    digits = message.split("(", 1)[-1].split(" ", 1)[0]
    return int(digits) if digits.isdigit() else None


def _qimage(im: Image.Image) -> QImage:
    """A Pillow image -> a QImage that owns its pixels (QImage is safe to build off the UI thread)."""
    rgba = im.convert("RGBA")
    data = rgba.tobytes("raw", "RGBA")
    return QImage(data, rgba.width, rgba.height, rgba.width * 4, QImage.Format.Format_RGBA8888).copy()


def _waveform(peaks: list[float]) -> QImage:
    img = QImage(THUMB, THUMB // 2, QImage.Format.Format_ARGB32)
    img.fill(QColor(40, 44, 52))
    painter = QPainter(img)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(97, 175, 239))
    bars = 64
    step = max(1, len(peaks) // bars)
    top = max(max(peaks), 1e-6)
    mid = img.height() / 2
    for i in range(bars):
        chunk = peaks[i * step:(i + 1) * step] or [0.0]
        h = max(1.0, max(chunk) / top * (mid - 4))
        painter.drawRect(int(i * img.width() / bars), int(mid - h), max(1, img.width() // bars - 1), int(2 * h))
    painter.end()
    return img


def _store(src: Path, store: Path) -> tuple[Path, str]:
    """Copy `src` into the store under its content hash (nexus_engine/attachment_store.py)."""
    try:
        return attachment_store.store(src, store)
    except (NexusError, OSError) as e:
        raise AttachmentError(f"{src.name}: could not be stored safely ({getattr(e, 'message', e)})") from e
