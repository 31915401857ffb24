"""`nexus bench imagine`: seconds per denoising step and peak memory of the imagination tower, loaded whole and
with diffusers' model CPU offload, through the real tower code (towers/image_gen.py).

Without an image generation tower in the profile (the offline starter pack ships none) it builds the tiny
random SD3 pipeline the tests use and says so in the JSON: those numbers measure the code path, not SD3.
Peak memory: the CUDA allocator's peak on a GPU; on a CPU the process's peak resident set, sampled every 5 ms.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from nexus_engine import testing
from nexus_engine.config import load_config
from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.towers.image_gen import ImageGenTower


def run(steps: int = 4, size: int = 64, tower: str | None = None, profile: str | None = None) -> dict[str, Any]:
    import torch

    config = load_config()
    spec = config.towers.get(tower) if tower else config.tower_for("imagination", profile)
    result: dict[str, Any] = {"bench": "imagine", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": platform.machine(), "cpus": os.cpu_count(),
                              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                              "steps": steps, "size": f"{size}x{size}"}
    with tempfile.TemporaryDirectory() as tmp:
        if spec is None:
            folder = testing.tiny_sd3_dir(Path(tmp) / "sd3")
            spec = TowerSpec(name="tiny-sd3", kind="image_gen", backend="diffusers", capabilities=("imagination",),
                             source=Source(path=str(folder)), quantization="fp32", dtype="fp32")
            result["model"] = "tiny random SD3 pipeline (no image generation tower is installed in this profile)"
        else:
            result["model"] = spec.name
        gpu = torch.cuda.is_available()
        modes = {"full": dataclasses.replace(spec, device="gpu" if gpu else "cpu"),
                 "offload": dataclasses.replace(spec, device="offload",
                                                options={**spec.options, "offload_device": "cuda:0" if gpu else "cpu"})}
        for mode, s in modes.items():
            result[mode] = _measure(s, steps, size, gpu)
    return result


def _measure(spec: TowerSpec, steps: int, size: int, gpu: bool) -> dict[str, Any]:
    import torch

    tower = ImageGenTower(spec)
    peak = _PeakRss()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    with peak:
        info = tower.load()
        tower.generate("warm up", steps=1, size=(size, size), seed=0)
        stamps: list[float] = []
        t0 = time.perf_counter()
        tower.generate("a red cube on a table", steps=steps, size=(size, size), seed=1,
                       on_step=lambda done, total: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t0
    gaps = [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]
    out = {"load_ms": round(info.ms, 1), "s_per_step": round(statistics.median(gaps), 4),
           "total_s": round(total, 3), "peak_rss_bytes": peak.peak}
    if gpu:
        out["peak_vram_bytes"] = int(torch.cuda.max_memory_allocated())
    tower.unload()
    return out


class _PeakRss:
    """The process's peak resident set while the block runs (sampled by a thread)."""

    def __enter__(self) -> _PeakRss:
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
