"""`nexus bench vision`: how fast the vision towers describe images and videos, through the engine code.

  images      the COCO sample (or --images FOLDER): images per second, labels only and labels + OCR, with
              the median per-image classify / OCR milliseconds (towers loaded and warmed up first)
  video       a video cut from those images (3 scenes, --seconds long at 25 fps): decode + scene sampling
              milliseconds per decoded frame, and describing milliseconds per kept frame
On a GPU machine the same code runs with the profile's towers where they are; the JSON names the device.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine import paths
from nexus_engine.config import load_config
from nexus_engine.engine import Engine
from nexus_engine.vision import service
from nexus_engine.vision.describe import describe_image
from nexus_engine.vision.media import open_image
from nexus_engine.vision.video import describe_video, sample_frames

COCO = paths.REPO_ROOT.parent / "shared" / "data" / "coco"


def run(images: Path | None = None, seconds: float = 12.0, profile: str | None = None) -> dict[str, Any]:
    folder = images or (COCO if COCO.is_dir() else Path("/work/shared/data/coco"))
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images in {folder}: pass --images FOLDER")
    engine = Engine(load_config(), profile)
    t = service.towers(engine)
    names = [n for n in (t.seeing, t.ocr) if n]
    result: dict[str, Any] = {"bench": "vision", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": platform.machine(), "cpus": os.cpu_count(), "device": _device(),
                              "profile": engine.profile, "towers": names, "images": len(files), "folder": str(folder)}
    with engine.residency.acquire(names) as lease:
        classifier = lease.tower(t.classifier) if t.classifier else service._siglip_classifier(lease.tower(t.siglip))
        ocr = lease.tower(t.ocr) if t.ocr else None
        result["load_ms"] = {n: round(lease.info[n]["load_ms"], 1) for n in names}
        loaded = [open_image(f).image for f in files]
        describe_image(loaded[0], classifier, ocr)  # warm-up
        for label, reader in (("labels", None), ("labels_ocr", ocr)):
            if label == "labels_ocr" and reader is None:
                continue
            t0 = time.perf_counter()
            ms = [describe_image(im, classifier, reader).ms for im in loaded]
            wall = time.perf_counter() - t0
            result[label] = {"images_per_s": round(len(loaded) / wall, 2),
                             **{f"median_{k}_ms": round(statistics.median(m[k] for m in ms), 1) for k in ms[0]}}
        with tempfile.TemporaryDirectory() as tmp:
            video = _make_video(Path(tmp) / "bench.mp4", files[:3], seconds)
            t0 = time.perf_counter()
            frames, info = sample_frames(video, should_stop=threading.Event().is_set)
            decode_s = time.perf_counter() - t0
            decoded = round(info.duration * 25)
            d = describe_video(frames, info, classifier, ocr)
        result["video"] = {"seconds": seconds, "decoded_frames": decoded, "kept_frames": len(frames),
                           "decode_sample_ms_per_frame": round(decode_s * 1000 / max(1, decoded), 2),
                           "describe_ms_per_kept_frame": round(d.ms["per_frame"], 1),
                           "segments": [s.phrase() for s in d.segments]}
    return result


def _make_video(path: Path, stills: list[Path], seconds: float, fps: int = 25) -> Path:
    import av
    from PIL import Image

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        per = int(seconds * fps / len(stills))
        for still in stills:
            frame = np.asarray(Image.open(still).convert("RGB").resize((640, 480)))
            for _ in range(per):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "cpu"
