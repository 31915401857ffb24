"""Image and video generation requests: validate, hold the tower through the residency manager, stream
progress (step, total, ETA, optional previews), and save the result with its recipe.

Generation is background work: it yields between steps when an interactive request (voice, chat) needs its
memory, and a cancel stops it between steps. Images are PNGs with prompt, seed, steps and model in their text
chunks; videos are MP4s (H.264 when this FFmpeg build has it, else MPEG-4 Part 2).
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_engine import atomic, paths
from nexus_engine.config import limits
from nexus_engine.errors import BadInputError, CancelledError, ModelMissingError
from nexus_engine.protocol import GenerateRequest, Progress

if TYPE_CHECKING:
    from nexus_engine.engine import Emit, Engine

MAX_PROMPT_CHARS = 2000  # CLIP reads 77 tokens and SD3's T5 256: a longer prompt is silently cut
HOWTO = ('declare a diffusers pipeline in your models.toml override, e.g.\n'
         '[towers.my-sd3]\nkind = "image_gen"\ncapabilities = ["imagination"]\n'
         'source = { path = "/models/stable-diffusion-3-medium-diffusers" }\nquantization = "bf16"\n'
         'device = "gpu"\nlatency = "background"\n\n[profiles.starter.roles]\nimagination = "my-sd3"')


def output_dir() -> Path:
    folder = paths.data_dir() / "generated"
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        atomic.sweep(folder)  # once per process: half-written files of a worker that was killed mid-save
    return folder


def check(req: GenerateRequest) -> None:
    if req.kind not in ("image", "video"):
        raise BadInputError(f"unknown generation kind {req.kind!r}", "use image or video")
    if req.kind == "image" and not req.prompt.strip():
        raise BadInputError("describe the image to generate: the prompt is empty")
    if len(req.prompt) > MAX_PROMPT_CHARS:
        raise BadInputError(f"the prompt is {len(req.prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
                            "the text encoders read only the first few hundred tokens: shorten it")
    if req.kind == "video" and not req.image and not req.prompt.strip():
        raise BadInputError("give the video an input image (or a prompt, for text-to-video pipelines)")
    lim = limits.active()  # models.toml [limits]: checked before the tower loads
    if not (16 <= req.width <= lim.image_side and 16 <= req.height <= lim.image_side):
        raise BadInputError(f"size {req.width}x{req.height} is out of range",
                            f"use 16 to {lim.image_side} pixels a side (image_side in [limits])")
    if req.width % 8 or req.height % 8:
        raise BadInputError(f"size {req.width}x{req.height}: width and height must be multiples of 8")
    if not 1 <= req.steps <= lim.image_steps:
        raise BadInputError(f"steps must be 1 to {lim.image_steps}, got {req.steps}")
    if req.kind == "video" and not 1 <= req.frames <= lim.video_frames:
        raise BadInputError(f"frames must be 1 to {lim.video_frames}, got {req.frames}")
    if req.preview_every < 0:
        raise BadInputError(f"preview_every must be 0 or more, got {req.preview_every}")
    if req.image and not Path(req.image).is_file():
        raise BadInputError(f"input image {req.image} does not exist")


def generate(engine: Engine, req: GenerateRequest, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    check(req)
    if req.seed is None:  # always a concrete seed, so the saved recipe and the caption can reproduce the image
        req.seed = random.randrange(2**31)
    role = "imagination" if req.kind == "image" else "video"
    try:
        name = engine.tower_name(req.tower, role)
    except ModelMissingError as e:
        raise ModelMissingError(f"no {req.kind} generation tower is installed in profile {engine.profile!r}",
                                HOWTO) from e
    with engine.residency.acquire((name,), "background", emit=emit, request_id=req.id) as lease:
        tower = lease.tower(name)
        t0 = time.perf_counter()
        safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", req.id)[:64]  # a file name, never a path (ids come from outside)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_id}"

        def on_step(done: int, total: int) -> None:
            elapsed = time.perf_counter() - t0
            eta = elapsed / done * (total - done) if done else None
            emit(Progress(id=req.id, step=done, total=total, eta_s=eta, message=f"step {done}/{total}"))

        def on_preview(done: int, image: Any) -> None:
            path = output_dir() / f"{stem}-preview-{done}.png"
            with atomic.replacing(path) as tmp:  # the app may show it the moment the Progress arrives
                image.save(tmp, format="PNG")
            emit(Progress(id=req.id, step=done, total=req.steps, message="preview", preview=str(path)))

        def should_stop() -> bool:
            return cancel.is_set() or lease.should_yield()

        try:
            if req.kind == "image":
                result = tower.generate(req.prompt, req.negative_prompt, steps=req.steps, seed=req.seed,
                                        size=(req.width, req.height), on_step=on_step, should_stop=should_stop,
                                        on_preview=on_preview, preview_every=req.preview_every)
                path = save_png(result, output_dir() / f"{stem}.png", req, name)
            else:
                frames = tower.generate(_load_image(req.image), req.prompt, req.negative_prompt, steps=req.steps,
                                        seed=req.seed, size=(req.width, req.height), frames=req.frames,
                                        on_step=on_step, should_stop=should_stop)
                path = save_mp4(frames, output_dir() / f"{stem}.mp4")
        except CancelledError:
            finish = "preempted" if lease.should_yield() and not cancel.is_set() else "cancelled"
            return {"finish": finish, "tower": name, "total_ms": (time.perf_counter() - t0) * 1000}
    return {"finish": "done", "path": str(path), "tower": name, "seed": req.seed, "steps": req.steps,
            "total_ms": (time.perf_counter() - t0) * 1000}


def _load_image(path: str | None) -> Any:
    if not path:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise BadInputError(f"cannot read the input image {path}: {e}") from e


def save_png(image: Any, path: Path, req: GenerateRequest, tower: str) -> Path:
    """The image with its recipe in PNG text chunks, so it can be reproduced (like ComfyUI/A1111 do)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt), ("seed", req.seed),
                       ("steps", req.steps), ("size", f"{req.width}x{req.height}"), ("model", tower),
                       ("software", "Nexus")):
        info.add_text(key, "" if value is None else str(value))
    with atomic.replacing(path) as tmp:  # a worker killed mid-save leaves no half image under the real name
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def save_mp4(frames: list[Any], path: Path, fps: int = 7) -> Path:
    import av
    import numpy as np

    if not frames:
        raise BadInputError("the video model returned no frames")
    with atomic.replacing(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = out.add_stream(codec, rate=fps)
        first = np.asarray(frames[0].convert("RGB"))
        stream.height, stream.width = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2  # yuv420 needs even sides
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            rgb = np.asarray(frame.convert("RGB"))[: stream.height, : stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
