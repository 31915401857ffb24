"""Resource limits (models.toml [limits]): configurable, validated, and enforced before decoding.

"Before decoding" is shown with files whose header is fine but whose data is missing or undecodable: the refusal
names the limit, so it came from the header (decoding would have failed differently, or found less).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nexus_engine import generation, paths
from nexus_engine.bench import fuzz_cases as fc
from nexus_engine.config import limits, load_config, load_models_toml
from nexus_engine.engine import Engine
from nexus_engine.errors import BadInputError, ConfigError, PromptTooLongError
from nexus_engine.protocol import ChatRequest, GenerateRequest
from nexus_engine.vision.media import open_image
from nexus_engine.vision.video import sample_frames
from nexus_engine.voice.audio_files import decode_file


@pytest.fixture
def tight(nexus_home: Path) -> Iterator[limits.Limits]:
    """Small limits from the user's models.toml override, active for the test."""
    paths.user_models_toml().write_text("[limits]\nimage_pixels = \"1M\"\naudio_seconds = 60\nvideo_seconds = 1\n"
                                        "prompt_chars = 1000\nmax_tokens = 64\nimage_side = 256\nimage_steps = 10\n"
                                        "video_frames = 8\n")
    limits.reset()
    found = limits.active()
    yield found
    limits.reset()


def test_defaults_overrides_and_errors(tmp_path: Path, tight: limits.Limits) -> None:
    assert limits.Limits() == load_models_toml([paths.SHIPPED_MODELS_TOML]).limits  # the shipped file = defaults
    assert tight.image_pixels == 1_000_000 and tight.video_seconds == 1.0 and tight.max_tokens == 64
    assert load_config().limits == tight
    for bad, word in (("image_pixels = -5", "positive"), ("audio_seconds = inf", "finite"), ("foo = 1", "unknown"),
                      ("max_tokens = true", "positive"), ('prompt_chars = "lots"', "not a parameter count")):
        paths.user_models_toml().write_text(f"[limits]\n{bad}\n")
        with pytest.raises(ConfigError, match=word) as info:
            load_config()
        assert "models.toml:2" in info.value.message and "[limits]" in info.value.message  # file, line, table


def test_image_pixels_come_from_the_header(tmp_path: Path, tight: limits.Limits) -> None:
    p = tmp_path / "huge.png"
    p.write_bytes(fc.png_header(2000, 1000))  # 2 MP claimed, no pixel data at all
    with pytest.raises(BadInputError, match="2 megapixels; the limit is 1 megapixels"):
        open_image(p)
    p.write_bytes(fc.png_bomb(12_000))  # a real bomb: 144 MP of zeros in a few hundred KB
    t0 = time.perf_counter()
    with pytest.raises(BadInputError, match="megapixels"):
        open_image(p)
    assert time.perf_counter() - t0 < 1.0  # refused, not decoded (decoding would take seconds and 430 MB)
    ok = tmp_path / "ok.png"
    ok.write_bytes(fc.image_bytes("PNG", (800, 600)))
    assert open_image(ok).width == 800


def test_audio_length_comes_from_the_header(tmp_path: Path, tight: limits.Limits) -> None:
    p = tmp_path / "long.flac"
    p.write_bytes(_flac(0.2, 3600))  # says an hour, holds 0.2 s: the refusal can only come from the header
    with pytest.raises(BadInputError, match="60 min long; the limit is 60 s"):
        decode_file(p)
    p.write_bytes(fc.wav_bytes(seconds=2.0))
    assert len(decode_file(p)) == 32000


def _flac(seconds: float, claim_s: float | None) -> bytes:
    """A FLAC file with `seconds` of noise whose STREAMINFO claims `claim_s` seconds (None: "length unknown", which
    the format allows)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16000, layout="mono")
        noise = np.random.default_rng(0).standard_normal((1, int(16000 * seconds))) * 1000
        frame = av.AudioFrame.from_ndarray(noise.astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    data = bytearray(buf.getvalue())
    n = int((claim_s or 0) * 16000)  # the low 36 bits of STREAMINFO bytes 10..17 are the total sample count
    data[21] = (data[21] & 0xF0) | ((n >> 32) & 0x0F)
    data[22:26] = (n & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(data)


def test_audio_whose_header_has_no_length_stops_at_the_limit(tmp_path: Path, nexus_home: Path) -> None:
    paths.user_models_toml().write_text("[limits]\naudio_seconds = 1\n")
    limits.reset()
    try:
        p = tmp_path / "unknown-length.flac"
        p.write_bytes(_flac(3.0, None))
        with pytest.raises(BadInputError, match="the limit is 1 s"):
            decode_file(p)
    finally:
        limits.reset()


def test_video_length_and_frame_size_come_from_the_metadata(tmp_path: Path, tight: limits.Limits) -> None:
    p = tmp_path / "clip.mp4"
    p.write_bytes(fc.video_bytes(frames=24))  # 3 s at 8 fps, limit 1 s
    with pytest.raises(BadInputError, match="0:03 long; the limit is 0:01"):
        sample_frames(p)
    paths.user_models_toml().write_text("[limits]\nimage_pixels = 500\n")
    limits.reset()
    p.write_bytes(fc.video_bytes(frames=4))
    with pytest.raises(BadInputError, match="frames are 32x32"):
        sample_frames(p)


def test_prompt_and_answer_size_are_refused_before_any_tower_loads(tight: limits.Limits) -> None:
    engine = Engine(load_config())
    cancel = threading.Event()
    sink: list[object] = []
    with pytest.raises(PromptTooLongError, match="1,001 characters; the limit is 1,000"):
        engine.chat(ChatRequest(messages=[{"role": "user", "content": "x" * 1001}], role="reasoning", max_tokens=8),
                    sink.append,
                    cancel)
    with pytest.raises(BadInputError, match="max_tokens must be at most 64"):
        engine.chat(ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=65, role="reasoning"),
                    sink.append, cancel)
    assert engine._residency is None and sink == []  # nothing was routed, built or loaded


def test_generation_size_is_checked_against_the_limits(tight: limits.Limits) -> None:
    for req, word in ((GenerateRequest(prompt="a cat", width=264, height=256), "out of range"),
                      (GenerateRequest(prompt="a cat", width=256, height=256, steps=11), "steps must be 1 to 10"),
                      (GenerateRequest(kind="video", prompt="a cat", width=64, height=64, steps=2, frames=9),
                       "frames must be 1 to 8")):
        with pytest.raises(BadInputError, match=word):
            generation.check(req)
    generation.check(GenerateRequest(prompt="a cat", width=256, height=256, steps=10))
