"""app/attachments.py on real files: COCO images, a video encoded with PyAV, audio, and every kind of bad input
the issue lists. No engine; runs on the test thread (the app runs the same code on a pool thread)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from app import attachments
from app.attachments import AttachmentError, inspect
from tests.app import media

LIBRISPEECH = Path("/work/shared/data/librispeech")


def test_image_is_decoded_thumbnailed_and_stored_by_hash(coco_images: list[Path], tmp_path: Path) -> None:
    src = coco_images[0]
    att = inspect(src, tmp_path / "store")
    assert att.kind == "image" and att.mime == "image/jpeg" and att.name == src.name
    assert att.meta["width"] > 100 and att.meta["height"] > 100 and att.meta["format"] == "JPEG"
    assert att.thumbnail is not None and max(att.thumbnail.width(), att.thumbnail.height()) == attachments.THUMB
    stored = Path(att.path)
    assert stored.is_absolute() and stored.parent == (tmp_path / "store").resolve()
    assert att.sha256 == hashlib.sha256(src.read_bytes()).hexdigest() == stored.stem
    assert stored.read_bytes() == src.read_bytes()
    assert inspect(src, tmp_path / "store").path == att.path  # the same file is stored once
    assert att.record()["meta"]["name"] == src.name


def test_video_first_frame_and_facts(coco_images: list[Path], tmp_path: Path) -> None:
    clip = media.video(tmp_path / "clip.mp4", coco_images[1], frames=12)
    att = inspect(clip, tmp_path / "store")
    assert att.kind == "video" and att.meta["width"] == 96 and att.meta["height"] == 64
    assert att.meta["frames"] == 12 and att.meta["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert att.thumbnail is not None and not att.thumbnail.isNull()


def test_audio_duration_and_waveform(tmp_path: Path) -> None:
    flac = sorted(LIBRISPEECH.glob("*.flac"))
    src = flac[0] if flac else media.tone(tmp_path / "tone.wav")
    att = inspect(src, tmp_path / "store")
    assert att.kind == "audio" and att.meta["duration_s"] > 1 and att.meta["sample_rate"] == 16000
    assert att.thumbnail is not None and att.thumbnail.width() == attachments.THUMB


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d, img: media.truncated(d / "half.jpg", img), "damaged or incomplete"),
    (lambda d, img: media.png_claiming(d / "huge.png", 20_000, 10_000), "200 megapixels; the limit is 50"),
    (lambda d, img: media.png_claiming(d / "big.png", 10_000, 6_000), "60 megapixels; the limit is 50"),
    (lambda d, img: media.not_an_image(d / "fake.png"), "not a readable image"),
    (lambda d, img: media.video_without_frames(d / "empty.mkv"), "has no frames"),
    (lambda d, img: (d / "notes.txt").write_text("hello") and d / "notes.txt", "unsupported file type .txt"),
    (lambda d, img: (d / "empty.wav").write_bytes(b"") or d / "empty.wav", "the file is empty"),
    (lambda d, img: d / "missing.jpg", "does not exist"),
    (lambda d, img: d, "is a folder"),
])
def test_bad_input_gives_a_clear_message(make, expected: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    photo = tmp_path / "photo.jpg"  # a real JPEG (the bad cases need no COCO image, so they run everywhere)
    Image.radial_gradient("L").convert("RGB").resize((320, 240)).save(photo, quality=90)
    path = make(folder, photo)
    with pytest.raises(AttachmentError) as err:
        inspect(path, tmp_path / "store")
    assert expected in str(err.value)
    assert str(err.value).startswith(Path(path).name)  # the message names the file
    assert not list((tmp_path / "store").glob("*")) if (tmp_path / "store").exists() else True
