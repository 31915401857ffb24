"""Open the images and videos the user gives Nexus, or say exactly why not.

The app checks attachments before sending them (app/attachments.py), but the CLI and the engine get paths from
anywhere, so every file is checked again here, with the same limits: a zero-byte file, a file that is not an
image, a truncated one, and a decompression bomb (more than the `image_pixels` limit of models.toml [limits],
refused from the header before any pixel is decoded) are BadInputErrors that name the file. An animated image
(GIF, APNG, WebP) is accepted: its frames are sampled like a short video's, and the description says so.
"""

from __future__ import annotations

import mimetypes
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus_engine.config import limits
from nexus_engine.errors import BadInputError

WORK_SIDE = 1600  # decode big JPEGs at reduced size (draft mode): the classifier sees 224 px, OCR at most 960
ANIMATION_FRAMES = 4  # frames of an animated image that get looked at
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg"}


@dataclass
class LoadedImage:
    image: Any  # PIL RGB image (the first frame of an animation)
    width: int  # of the original file
    height: int
    format: str
    frames: int = 1  # > 1: an animated image
    extra: list[Any] = field(default_factory=list)  # later frames of an animation, sampled evenly
    notes: list[str] = field(default_factory=list)


def kind_of(path: str | Path) -> str:
    """image | video | other, from the extension (then the MIME type)."""
    ext = Path(path).suffix.lower()
    if ext in IMAGE_EXT:
        return "image"
    if ext in VIDEO_EXT:
        return "video"
    major = (mimetypes.guess_type(str(path))[0] or "").split("/")[0]
    return major if major in ("image", "video") else "other"


def check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p} does not exist")
    if p.is_dir():
        raise BadInputError(f"{p} is a folder", "give a file inside it")
    if p.stat().st_size == 0:
        raise BadInputError(f"{p.name}: the file is empty (0 bytes)")
    return p


def open_image(path: str | Path) -> LoadedImage:
    """Decode an image fully (a truncated file fails here), as RGB, turned the way its EXIF says."""
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    p = check_file(path)
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a damaged image must fail, not be described from half its pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > limits.active().image_pixels:  # from the header: nothing is decoded yet
                    raise BadInputError(_too_big(p.name, w * h), "scale it down first")
                fmt, n = im.format or "image", int(getattr(im, "n_frames", 1) or 1)
                if fmt == "JPEG":
                    im.draft("RGB", (WORK_SIDE, WORK_SIDE))  # decode at 1/2, 1/4 or 1/8 size: much faster
                first = _rgb(ImageOps.exif_transpose(im) or im)
                extra = _animation_frames(im, n) if n > 1 else []
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInputError(_too_big(p.name, None), "scale it down first") from e
    except UnidentifiedImageError as e:
        raise BadInputError(f"{p.name}: not a readable image (the file is damaged or not an image)") from e
    except (OSError, SyntaxError, ValueError, IndexError, EOFError, struct.error, TypeError, ZeroDivisionError) as e:
        # what Pillow's decoders raise on damaged files (SyntaxError for malformed headers, IndexError for a
        # truncated GIF palette, struct.error for short chunks; found by `nexus bench fuzz`)
        raise BadInputError(f"{p.name}: the image is damaged or incomplete ({type(e).__name__}: {e})"[:400],
                            "save or download it again") from e
    first.thumbnail((WORK_SIDE, WORK_SIDE))
    notes = [f"an animated {fmt} with {n} frames; {1 + len(extra)} of them were looked at"] if n > 1 else []
    return LoadedImage(first, w, h, fmt, n, extra, notes)


def _animation_frames(im: Any, n: int) -> list[Any]:
    """Frames after the first, evenly spaced (decoding an animation is sequential, so this reads them all)."""
    picks = sorted({round(i * (n - 1) / (ANIMATION_FRAMES - 1)) for i in range(1, ANIMATION_FRAMES)})
    out = []
    for i in picks:
        im.seek(i)
        frame = _rgb(im)
        frame.thumbnail((WORK_SIDE, WORK_SIDE))
        out.append(frame)
    return out


def _rgb(im: Any) -> Any:
    """RGB on white: transparent pixels would otherwise turn black and read as a dark photo."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        base = Image.new("RGB", rgba.size, "white")
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return im.convert("RGB")


def _too_big(name: str, pixels: int | None) -> str:
    size = f"{pixels / 1e6:.0f} megapixels" if pixels else "too many pixels to decode safely"
    return f"{name}: the image is {size}; the limit is {limits.active().image_pixels / 1e6:g} megapixels"
