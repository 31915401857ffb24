"""Hostile inputs for `nexus bench fuzz`: small hand-made corpora, valid seeds to mutate, and the mutator.

Every corpus entry is (name, case). File cases are (extension, bytes): the fuzzer writes them to a file with that
extension, since the extension is part of what a parser is told (a WAV named .png, a PNG named .jpg).
"""

from __future__ import annotations

import io
import json
import random
import struct
import wave
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine import paths
from nexus_engine.protocol import message_types


# --------------------------------------------------------------------------------------------- mutation
def mutate(data: bytes, rng: random.Random, n: int = 4) -> bytes:
    """Byte flips, truncation, duplication and insertion: the damage downloads and disks actually do."""
    b = bytearray(data)
    for _ in range(n):
        op = rng.randrange(5)
        if not b:
            b += bytes([rng.randrange(256)])
        elif op == 0:  # flip a byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:  # truncate
            del b[rng.randrange(len(b)):]
        elif op == 2:  # duplicate a slice
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 64)]
        elif op == 3:  # insert junk
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:  # overwrite a 4-byte field with an extreme value (sizes, counts, dimensions)
            i = rng.randrange(max(1, len(b) - 4))
            b[i:i + 4] = struct.pack(">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 65535]))
    return bytes(b)


# ------------------------------------------------------------------------------------------------ images
def image_bytes(fmt: str, size: tuple[int, int] = (24, 16), frames: int = 1) -> bytes:
    from PIL import Image

    ims = [Image.new("RGB", size, (40 * i % 256, 120, 200)) for i in range(frames)]
    buf = io.BytesIO()
    if frames > 1:
        ims[0].save(buf, format=fmt, save_all=True, append_images=ims[1:], duration=50)
    else:
        ims[0].save(buf, format=fmt)
    return buf.getvalue()


def png_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims width x height (8-bit RGB) and holds `idat` as its only image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_bomb(side: int = 12_000) -> bytes:
    """A real decompression bomb: side x side black RGB pixels, a few hundred KB compressed."""
    row = b"\x00" + b"\x00" * (side * 3)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return png_header(side, side, data)


def image_seeds() -> list[tuple[str, bytes]]:
    return [(".png", image_bytes("PNG")), (".jpg", image_bytes("JPEG")), (".gif", image_bytes("GIF", frames=3)),
            (".webp", image_bytes("WEBP")), (".bmp", image_bytes("BMP")), (".tiff", image_bytes("TIFF"))]


def image_corpus() -> list[tuple[str, tuple[str, bytes]]]:
    png, jpg = image_bytes("PNG"), image_bytes("JPEG")
    out = [("empty .png", (".png", b"")), ("one byte", (".png", b"\x89")), ("text as .jpg", (".jpg", b"hello"))]
    for ext, data in image_seeds():
        for cut in (0.1, 0.5, 0.9):
            out.append((f"truncated {ext} at {cut:.0%}", (ext, data[: int(len(data) * cut)])))
    out += [
        ("PNG header claims 100000x100000", (".png", png_header(100_000, 100_000))),
        ("PNG header claims 60000x1000 (60 MP)", (".png", png_header(60_000, 1_000))),
        ("PNG header claims 0x0", (".png", png_header(0, 0))),
        ("PNG header claims 2^31-1 x 1", (".png", png_header(0x7FFFFFFF, 1))),
        ("PNG decompression bomb 12000x12000", (".png", png_bomb())),
        ("PNG named .jpg", (".jpg", png)), ("JPEG named .png", (".png", jpg)), ("JPEG named .gif", (".gif", jpg)),
        ("WAV named .png", (".png", wav_bytes())), ("MP4 named .jpg", (".jpg", video_bytes())),
        ("zeros as .webp", (".webp", b"\x00" * 4096)), ("random bytes as .tiff", (".tiff", bytes(range(256)) * 8)),
        ("GIF header only", (".gif", b"GIF89a\x10\x00\x10\x00\x00\x00\x00")),
    ]
    return out


# ------------------------------------------------------------------------------------------------- audio
def wav_bytes(rate: int = 16000, seconds: float = 0.5, channels: int = 1, frames: int | None = None) -> bytes:
    n = int(rate * seconds) if frames is None else frames
    t = np.arange(n) / max(rate, 1)
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    x = np.repeat(x[:, None], channels, axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    """A 32-bit float WAV (format 3), which can hold NaN and infinity."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_claiming(seconds: float, rate: int = 16000) -> bytes:
    """A WAV whose header says `seconds` long but holds a tenth of a second (a lying header)."""
    real = wav_bytes(rate, 0.1)
    size = int(seconds * rate * 2)
    return real[:4] + struct.pack("<I", min(size + 36, 0xFFFFFFFF)) + real[8:40] + struct.pack(
        "<I", min(size, 0xFFFFFFFF)) + real[44:]


def audio_seeds() -> list[tuple[str, bytes]]:
    return [(".wav", wav_bytes()), (".wav", wav_bytes(44100, channels=2)), (".wav", float_wav(np.zeros(800)))]


def audio_corpus() -> list[tuple[str, tuple[str, bytes]]]:
    nan = np.full(1600, np.nan)
    inf = np.concatenate([np.zeros(800), np.full(800, np.inf)])
    return [
        ("empty .wav", (".wav", b"")), ("zero-length WAV", (".wav", wav_bytes(frames=0))),
        ("WAV at 1 Hz", (".wav", wav_bytes(1, 2.0))), ("WAV at 7 Hz", (".wav", wav_bytes(7, 1.0))),
        ("WAV at 8 kHz", (".wav", wav_bytes(8000))), ("WAV at 192 kHz", (".wav", wav_bytes(192_000, 0.2))),
        ("WAV at 1 MHz", (".wav", wav_bytes(1_000_000, 0.01))),
        ("WAV with 8 channels", (".wav", wav_bytes(channels=8))),
        ("float WAV of NaN", (".wav", float_wav(nan))), ("float WAV with infinities", (".wav", float_wav(inf))),
        ("WAV header claiming 10 hours", (".wav", wav_claiming(36_000))),
        ("truncated WAV header", (".wav", wav_bytes()[:30])), ("PNG named .wav", (".wav", image_bytes("PNG"))),
        ("text named .mp3", (".mp3", b"ID3 not really an mp3")), ("random bytes .flac", (".flac", bytes(range(256)))),
        ("MP4 video without audio named .m4a", (".m4a", video_bytes())),
    ]


# ------------------------------------------------------------------------------------------------- video
def video_bytes(frames: int = 8, size: int = 32, audio_only: bool = False) -> bytes:
    """A tiny MP4 (MPEG-4 Part 2 video, or AAC audio only), encoded in memory with PyAV."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        if audio_only:
            stream = out.add_stream("aac", rate=16000)
            for i in range(4):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts = 16000, i * 1024
                for packet in stream.encode(frame):
                    out.mux(packet)
        else:
            stream = out.add_stream("mpeg4", rate=8)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(frames):
                img = np.full((size, size, 3), (i * 30) % 256, dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def video_corpus() -> list[tuple[str, tuple[str, bytes]]]:
    mp4 = video_bytes()
    return [
        ("empty .mp4", (".mp4", b"")), ("truncated MP4 at 10%", (".mp4", mp4[: len(mp4) // 10])),
        ("truncated MP4 at 60%", (".mp4", mp4[: len(mp4) * 6 // 10])), ("audio-only MP4", (".mp4", video_bytes(
            audio_only=True))), ("PNG named .mp4", (".mp4", image_bytes("PNG"))),
        ("WAV named .mkv", (".mkv", wav_bytes())), ("random bytes .webm", (".webm", bytes(range(256)) * 4)),
        ("zeros .avi", (".avi", b"\x00" * 2048)), ("MP4 box header only", (".mp4", b"\x00\x00\x00\x18ftypisom")),
    ]


# ----------------------------------------------------------------------------------------- models.toml
def toml_seed() -> str:
    return paths.SHIPPED_MODELS_TOML.read_text(encoding="utf-8")


def toml_corpus() -> list[tuple[str, str]]:
    tower = ('[towers.x]\nkind = "llm"\nbackend = "llama_cpp"\ncapabilities = ["reasoning"]\n'
             'source = { path = "/nowhere" }\nquantization = "gguf"\n[profiles.p.roles]\nreasoning = "x"\n')
    return [
        ("empty", ""), ("binary", "\x00\x01\x02"), ("deep arrays", "a = " + "[" * 5000 + "]" * 5000),
        ("deep inline tables", "a = " + "{b = " * 2000 + "1" + "}" * 2000), ("unknown top key", "foo = 1\n"),
        ("towers not a table", "towers = 3\n"), ("tower not a table", "[towers]\nx = 1\n"),
        ("dotted tower name", '[towers.glm.4]\nkind = "llm"\n'), ("params inf", tower.replace(
            'quantization = "gguf"', 'quantization = "gguf"\nparams = inf')),
        ("params nan", tower.replace('quantization = "gguf"', 'quantization = "gguf"\nparams = nan')),
        ("params huge", tower.replace('quantization = "gguf"', 'quantization = "gguf"\nparams = 1e308')),
        ("params negative string", tower.replace('quantization = "gguf"', 'quantization = "gguf"\nparams = "-4B"')),
        ("context_length list", tower.replace('quantization = "gguf"', 'quantization = "gguf"\ncontext_length = []')),
        ("remote code unpinned", tower.replace('quantization = "gguf"', 'quantization = "gguf"\n'
                                               'trust_remote_code = true')),
        ("role to missing tower", tower.replace('reasoning = "x"', 'reasoning = "y"')),
        ("role list empty", tower.replace('reasoning = "x"', "reasoning = []")),
        ("limits inf", tower + "[limits]\nimage_pixels = inf\n"),
        ("limits nan", tower + "[limits]\naudio_seconds = nan\n"),
        ("limits negative", tower + "[limits]\nmax_tokens = -1\n"),
        ("limits bool", tower + "[limits]\nimage_side = true\n"),
        ("limits string", tower + '[limits]\nprompt_chars = "lots"\n'),
        ("limits unknown", tower + "[limits]\nfoo = 1\n"),
        ("limits not a table", tower.replace("[towers.x]", "limits = 5\n[towers.x]")),
        ("vram garbage", tower + '[profiles.p]\nvram = "16 potatoes"\n'), ("source list", tower.replace(
            'source = { path = "/nowhere" }', "source = []")),
        ("two sources", tower.replace('{ path = "/nowhere" }', '{ path = "/a", hub = "x/y" }')),
        ("options not a table", tower.replace('quantization = "gguf"', 'quantization = "gguf"\noptions = 3')),
        ("default profile missing", 'default_profile = "nope"\n' + tower),
        ("duplicate case-insensitive", tower + tower.replace("[towers.x]", "[towers.X]").split("[profiles")[0]),
    ]


# ---------------------------------------------------------------------------------------------- protocol
def protocol_seeds() -> list[bytes]:
    out = []
    for cls in message_types().values():
        try:
            out.append(cls().encode())
        except TypeError:  # a message with required fields (none today)
            continue
    return out


def protocol_corpus() -> list[tuple[str, bytes]]:
    return [
        ("empty", b""), ("not UTF-8", b"\xff\xfe\x00"), ("JSON list", b"[1, 2]"), ("no version", b'{"type": "ping"}'),
        ("version 2", b'{"v": 2, "type": "ping"}'), ("unknown type", b'{"v": 1, "type": "format_disk"}'),
        ("deep nesting", b'{"v": 1, "type": "chat", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("NaN temperature", b'{"v": 1, "type": "chat", "temperature": NaN}'),
        ("1e999 temperature", b'{"v": 1, "type": "chat", "temperature": 1e999}'),
        ("huge max_tokens", b'{"v": 1, "type": "chat", "max_tokens": ' + b"9" * 5000 + b"}"),
        ("path in id", b'{"v": 1, "type": "generate", "id": "../../etc/passwd"}'),
        ("NUL in id", b'{"v": 1, "type": "ping", "id": "a\\u0000b"}'),
        ("unknown field", b'{"v": 1, "type": "ping", "exec": "rm -rf /"}'),
        ("messages not a list", b'{"v": 1, "type": "chat", "messages": "hi"}'),
        ("bool as int", b'{"v": 1, "type": "chat", "max_tokens": true}'),
        ("lone surrogate", b'{"v": 1, "type": "chat", "messages": [{"role": "user", "content": "\\ud800"}]}'),
        ("duplicate keys", b'{"v": 1, "type": "ping", "type": "cancel"}'),
    ]


# ----------------------------------------------------------------------------------------------- bitmask
def bitmask_seed() -> dict[str, Any] | None:
    try:
        from nexus_engine.research.niwt import bitmask as bm
    except ImportError:
        return None
    n = 4
    return bm.new_bitmask(
        teacher={"tower": "tiny", "model_type": "llama", "architecture": "LlamaForCausalLM", "num_layers": n,
                 "hidden_size": 32, "revision": "sha256:0123456789abcdef"},
        task={"name": "text", "decision_metric": "ppl", "target_retention": 0.97, "dataset_hash": "ab" * 32},
        skipped=[2], strategy="greedy",
        importance={"method": "sweep", "scores": {"skip_delta_nll": [0.1] * n}},
        metrics={"full": {"text": {"ppl": 20.0}}, "collapsed": {"text": {"ppl": 20.5}},
                 "retention": {"text": 0.97}, "usable": {"text": True}, "split": "eval"},
        prov={"created": "2026-01-01T00:00:00+00:00", "nexus_version": "x", "git_commit": None, "command": "fuzz",
              "data": {}, "notes": ""})


def manifest_seed() -> dict[str, Any]:
    return {"format": "nexus.agid.adapter", "version": 1, "kind": "text_bridges", "tower": "smollm2-hf",
            "created": "2026-01-01T00:00:00", "teacher": {"tower": "smollm2-hf", "revision": "abc"},
            "files": {"adapter.safetensors": "00" * 32}, "config": {}, "data": {}, "metrics": {}, "training": {}}


def json_corpus() -> list[tuple[str, bytes]]:
    return [("empty", b""), ("not UTF-8", b"\xff\xfe"), ("null", b"null"), ("list", b"[]"), ("string", b'"x"'),
            ("deep", b"[" * 100_000 + b"]" * 100_000), ("NaN", b'{"version": NaN}'), ("huge int", b"9" * 10_000)]


def mutate_doc(doc: Any, rng: random.Random) -> Any:
    """A JSON document with one value somewhere replaced, removed or retyped."""
    doc = json.loads(json.dumps(doc))
    values = [None, True, 0, -1, 1e308, "", "x" * 1000, [], {}, [1, 2], {"a": 1}, 10**30, 0.5]
    path: list[Any] = []
    node = doc
    while isinstance(node, dict | list) and node and rng.random() < 0.7:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append(key)
        node = node[key]
    if not path:
        return rng.choice(values)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(values)
    return doc


def write_case(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path
