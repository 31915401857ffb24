"""Tower sizes: estimated from the spec before the first load, measured after it and remembered.

estimate(spec): parameters (MoE: every expert) × bytes per parameter for the quantization × MARGIN; for a
GGUF file, the file's size × MARGIN. FootprintStore keeps what the manager measured after a load, in
`footprints.json` in the cache folder, keyed tower|quantization|device; measured values win over estimates.
cost_for(spec, store) turns both into the policy's TowerCost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nexus_engine import paths
from nexus_engine.config.schema import QUANT_BYTES_PER_PARAM, TowerSpec
from nexus_engine.errors import NexusError
from nexus_engine.residency.policy import TowerCost
from nexus_engine.towers.base import Footprint

log = logging.getLogger("nexus.residency")

# 10 %: embeddings, norms and the LM head that bitsandbytes leaves unquantized, plus the CUDA caching
# allocator's rounding. Activations and the KV cache are not in here: they come out of the Budget's reserve.
MARGIN = 1.10
BNB_QUANTS = ("nf4", "int8")  # bitsandbytes: quantized while loading a bf16 checkpoint
BNB_BACKENDS = ("transformers", "diffusers")
FLOAT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
CHECKPOINT_BYTES = 2  # hub checkpoints are bf16: what a bitsandbytes load reads from disk
# how each backend offloads: "split" = accelerate device_map (layers on the GPU, the rest in RAM),
# "model" = diffusers enable_model_cpu_offload (components in RAM, one at a time on the GPU)
OFFLOAD = {"transformers": "split", "llama_cpp": "split", "diffusers": "model"}
MODEL_OFFLOAD_SHARE = 0.65  # the largest component's share of a pipeline: T5-XXL in SD3 (61 %), the UNet in SVD
SPLIT_MIN_SHARE = 0.10  # an accelerate split needs a few layers on the GPU at least
SPLIT_MIN_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class Estimate:
    gpu_bytes: int  # the whole tower on the GPU
    ram_bytes: int  # the same form in RAM (cpu tower, warm copy, diffusers offload)
    split_ram_bytes: int  # the whole tower in RAM as an accelerate split keeps it
    disk_bytes: int  # what a cold load reads
    basis: str  # how it was computed, for `nexus plan`


def _file_bytes(spec: TowerSpec) -> int | None:
    if not spec.source.file:
        return None
    from nexus_engine import weights  # a local stat, never the network

    try:
        path = weights.resolve(spec)
        return path.stat().st_size if path.is_file() else None
    except (NexusError, OSError):
        return None


WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".bin", ".pt", ".pth")


def _folder_bytes(spec: TowerSpec) -> int | None:
    """Weight bytes in a local folder (a whole diffusers pipeline included): the size of a tower declared
    without `params`, which is how most users add their own model."""
    from nexus_engine import weights

    try:
        root = weights.resolve(spec)
    except (NexusError, OSError):
        return None
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
    total = sum(p.stat().st_size for p in files if p.is_file())
    return total or None


def estimate(spec: TowerSpec) -> Estimate | None:
    """Bytes before the first load; None when the spec gives no way to know (no params, no local weights)."""
    file_bytes = _file_bytes(spec) if spec.quantization == "gguf" else None
    if file_bytes:
        size = math.ceil(file_bytes * MARGIN)
        return Estimate(size, size, size, file_bytes, f"GGUF file {file_bytes / 1e9:.2f} GB × {MARGIN:.2f}")
    if not spec.params:
        on_disk = _folder_bytes(spec) if spec.source.kind != "hub" else None
        if not on_disk:
            return None
        size = math.ceil(on_disk * MARGIN)  # loaded as stored: the files' dtype is the best guess we have
        return Estimate(size, size, size, on_disk, f"weight files {on_disk / 1e9:.2f} GB × {MARGIN:.2f}")
    per = QUANT_BYTES_PER_PARAM[spec.quantization]
    bnb = spec.quantization in BNB_QUANTS and spec.backend in BNB_BACKENDS
    experts = min(spec.expert_params or 0, spec.params) if bnb and spec.backend == "transformers" else 0
    if experts:
        # transformers 5 stores MoE experts as fused 3-D parameters and bitsandbytes quantizes only nn.Linear:
        # the experts stay in the compute dtype (tests/engine/test_seed_loaders.py measures this on a tiny MoE)
        float_per = FLOAT_BYTES.get(spec.dtype, CHECKPOINT_BYTES)
        per = ((spec.params - experts) * per + experts * float_per) / spec.params
    size = math.ceil(spec.params * per * MARGIN)
    # transformers keeps CPU-offloaded layers of a bitsandbytes model unquantized, in the compute dtype
    split_per = FLOAT_BYTES.get(spec.dtype, CHECKPOINT_BYTES) if bnb and spec.backend == "transformers" else per
    disk = spec.params * (CHECKPOINT_BYTES if bnb else per)
    return Estimate(size, size, math.ceil(spec.params * split_per * MARGIN), math.ceil(disk),
                    f"{spec.params / 1e9:.3g}B params × {per:g} B ({spec.quantization}) × {MARGIN:.2f}")


class FootprintStore:
    """Measured footprints, one JSON file shared by the engine and the CLI; every write is atomic."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.cache_dir() / "footprints.json"
        self._lock = threading.Lock()

    @staticmethod
    def key(tower: str, quantization: str, device: str) -> str:
        return f"{tower}|{quantization}|{device}"

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:  # a damaged file costs a re-measurement, not a crash
            log.warning("ignoring unreadable footprint file %s: %s", self.path, e)
            return {}

    def get(self, tower: str, quantization: str, device: str) -> Footprint | None:
        entry = self._read().get(self.key(tower, quantization, device))
        if not isinstance(entry, dict):
            return None
        return Footprint(ram=int(entry.get("ram", 0)), vram=int(entry.get("vram", 0)), measured=True)

    def record(self, tower: str, quantization: str, device: str, fp: Footprint) -> None:
        with self._lock:  # re-read under the lock so two towers measured together both survive
            data = self._read()
            data[self.key(tower, quantization, device)] = {"ram": int(fp.ram), "vram": int(fp.vram),
                                                           "measured_at": time.time()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".footprints-", suffix=".json", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def all(self) -> dict[str, dict]:
        return self._read()


def cost_for(spec: TowerSpec, store: FootprintStore | None = None) -> TowerCost | None:
    """The policy's view of a tower: measured bytes where known, estimates elsewhere; None if unknowable."""
    est = estimate(spec)
    on_gpu = store.get(spec.name, spec.quantization, "gpu") if store else None
    on_cpu = store.get(spec.name, spec.quantization, "cpu") if store else None
    if on_gpu:
        gpu = on_gpu.vram
    elif est:
        gpu = est.gpu_bytes
    elif on_cpu:
        gpu = on_cpu.ram  # only ever measured on the CPU: the same weights would take as much on the GPU
    else:
        return None
    ram = on_cpu.ram if on_cpu else gpu  # a warm copy is the GPU form moved to RAM
    # a measured GPU size also corrects the unquantized split estimate by the same ratio
    split = math.ceil(est.split_ram_bytes * gpu / est.gpu_bytes) if est and est.gpu_bytes else ram
    offload = OFFLOAD.get(spec.backend)
    min_gpu = (math.ceil(ram * MODEL_OFFLOAD_SHARE) if offload == "model"
               else min(gpu, max(SPLIT_MIN_BYTES, math.ceil(gpu * SPLIT_MIN_SHARE))) if offload == "split" else 0)
    return TowerCost(name=spec.name, latency=spec.latency, device=spec.device, gpu_bytes=gpu, ram_bytes=ram,
                     split_ram_bytes=split, disk_bytes=est.disk_bytes if est else ram, offload=offload,
                     offload_min_gpu=min_gpu, measured=bool(on_gpu or on_cpu))
