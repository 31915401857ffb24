"""What every seed-tower loader shares beyond hf_loading: the per-kind quantization check, remote-code rules,
fitting a tower into VRAM (offload instead of failing), and the load/unload/footprint lifecycle.

A seed tower subclasses `SeedTower`, names the quantizations its kind can take (`QUANTS`, with `QUANT_WHY`
saying why the others are refused) and implements `_load(folder)`, which fills the tower's models and returns
LoadInfo details. `load()` checks the spec, times the load and measures the footprint; `unload()` drops every
module the tower registered and frees the CUDA cache.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nexus_engine import weights
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import (
    BadInputError,
    ConfigError,
    InternalError,
    ModelMissingError,
    NexusError,
    UnsafeWeightsError,
)
from nexus_engine.towers import hf_loading
from nexus_engine.towers.base import Footprint, LoadInfo, Stopwatch

log = logging.getLogger("nexus.towers.seed")

FLOATS = ("bf16", "fp16", "fp32")
BNB = ("nf4", "int8")


# ------------------------------------------------------------------------------------------ spec checks
def check_quantization(spec: TowerSpec, allowed: tuple[str, ...], why: str = "") -> None:
    """Refuse a quantization this tower kind cannot take (config validation only knows the backend's list)."""
    if spec.quantization not in allowed:
        raise ConfigError(f"tower {spec.name!r}: quantization {spec.quantization!r} is not supported for a "
                          f"{spec.kind} tower on {spec.backend}" + (f" ({why})" if why else ""),
                          f"set quantization to one of {', '.join(allowed)} in [towers.{spec.name}]")


def check_remote_code(spec: TowerSpec, config: dict[str, Any], folder: Path) -> bool:
    """True when the model needs its own Python code (config.json `auto_map`); refused unless the spec opts in.

    Config validation already ties trust_remote_code to a hub source pinned to a commit; a spec built in code
    skips that, so the rule is checked again here.
    """
    needs = bool(config.get("auto_map"))
    if spec.trust_remote_code and not (spec.source.hub and spec.source.pinned):
        raise ConfigError(f"tower {spec.name!r}: remote code is only allowed from a hub source pinned to a commit",
                          'set source = { hub = "org/name", revision = "<40-hex commit you reviewed>" }')
    if needs and not spec.trust_remote_code:
        files = sorted(p.name for p in folder.glob("*.py"))
        raise UnsafeWeightsError(
            f"tower {spec.name!r}: {folder} ships its own Python code ({', '.join(files) or 'auto_map'}), which "
            "runs when the model loads",
            f"review that code, then set trust_remote_code = true and pin source.revision in [towers.{spec.name}]")
    return needs


def model_folder(spec: TowerSpec) -> Path:
    """The tower's weights folder (local path, package or hub cache); a file source is refused."""
    path = weights.resolve(spec)
    if not path.is_dir():
        raise ModelMissingError(f"tower {spec.name!r}: {spec.backend} needs a model folder, got the file {path}",
                                f"point source at the model's folder in [towers.{spec.name}]")
    return path


def read_config(folder: Path, name: str = "config.json") -> dict[str, Any]:
    path = folder / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelMissingError(f"{path} is missing", "the folder is not a complete model download") from e
    except (OSError, ValueError) as e:
        raise ModelMissingError(f"{path} is not readable JSON ({e})", "download the model again") from e


# ---------------------------------------------------------------------------------------- VRAM fitting
def choose_device(device: str, need: int | None, free: int | None) -> tuple[str, str]:
    """("gpu" | "offload" | device, note). A GPU tower that does not fit the free VRAM is offloaded, not failed.

    Pure: `need` is the tower's estimated bytes, `free` the VRAM it may use (None: unknown or no GPU).
    """
    if device != "gpu" or need is None or free is None or need <= free:
        return device, ""
    return "offload", (f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB of VRAM free: "
                       "offloading part of it to RAM")


def vram_limit(spec: TowerSpec) -> int | None:
    """VRAM this tower may use: `options.max_vram` ("6GiB", bytes) or what CUDA reports free; None without CUDA."""
    from nexus_engine.config.units import parse_bytes
    from nexus_engine.residency.budget import cuda_memory

    info = cuda_memory()
    if info is None:
        return None
    cap = spec.options.get("max_vram")
    return min(info[0], parse_bytes(cap)) if cap is not None else info[0]


def fit_spec(spec: TowerSpec) -> tuple[TowerSpec, str]:
    """The spec with device switched to "offload" when its estimate exceeds the VRAM it may use."""
    from nexus_engine.residency.footprints import estimate

    est = estimate(spec)
    device, note = choose_device(spec.device, est.gpu_bytes if est else None, vram_limit(spec))
    return (dataclasses.replace(spec, device=device), note) if device != spec.device else (spec, "")


def transformers_kwargs(spec: TowerSpec, folder: Path) -> dict[str, Any]:
    """hf_loading.from_pretrained_kwargs plus accelerate's max_memory when the tower is offloaded."""
    kwargs = hf_loading.from_pretrained_kwargs(spec, folder)
    limit = vram_limit(spec)
    if spec.device == "offload" and limit is not None:
        import psutil

        from nexus_engine.config.units import parse_bytes

        # accelerate fills device 0 up to `limit` and puts the remaining layers in RAM (a device missing from
        # max_memory gets nothing, so "cpu" is always named)
        ram = spec.options.get("max_ram")
        kwargs["max_memory"] = {0: limit, "cpu": parse_bytes(ram) if ram else psutil.virtual_memory().available}
    return kwargs


@contextmanager
def load_errors(spec: TowerSpec, folder: Path, library: str = "transformers") -> Iterator[None]:
    """Turn a library's loading failure (missing file, damaged weights, unknown architecture) into a
    ModelMissingError that names the tower and folder."""
    from safetensors import SafetensorError

    try:
        yield
    except (NexusError, torch.OutOfMemoryError):
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise ModelMissingError(f"tower {spec.name!r}: {library} could not load {folder}: {e}",
                                "the folder needs the model's config, processor/tokenizer files and *.safetensors "
                                "weights; download the model again if a file is damaged") from e


def input_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: the first parameter's device (accelerate hooks move them on from there)."""
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


# -------------------------------------------------------------------------------------------- inputs
def pil_image(image: Any) -> Any:
    """A PIL RGB image from a PIL image or an HxWx3 array."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise BadInputError(f"expected an RGB image (H, W, 3), got an array of shape {arr.shape}")
    return Image.fromarray(arr.astype(np.uint8))


def cast_floats(enc: Any, dtype: torch.dtype) -> Any:
    """Cast floating inputs (pixel values) to the model's dtype; ids and masks stay as they are."""
    for key, value in enc.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            enc[key] = value.to(dtype)
    return enc


# ------------------------------------------------------------------------------------------ footprints
def footprint_of(modules: list[torch.nn.Module], probe: hf_loading.MemoryProbe) -> tuple[Footprint, dict[str, int]]:
    """Measured bytes of several modules (a pipeline's components). Tensors on "meta" are accelerate-offloaded
    weights whose real copy is held in RAM by the offload hooks, so they count as RAM."""
    totals: dict[str, int] = {}
    for module in modules:
        for device, n in hf_loading.tensor_bytes(module).items():
            totals[device] = totals.get(device, 0) + n
    delta = probe.delta()
    ram = totals.get("cpu", 0) + totals.get("meta", 0)
    vram = max(totals.get("cuda", 0), delta["cuda_allocated_delta"])
    return Footprint(ram=ram, vram=vram, measured=True), {**{f"{k}_tensor_bytes": v for k, v in totals.items()},
                                                          **delta}


# ------------------------------------------------------------------------------------------- lifecycle
class SeedTower:
    """Base of the seed towers: spec checks, timing, measured footprint, unload. Subclasses implement `_load`."""

    QUANTS: tuple[str, ...] = FLOATS
    QUANT_WHY = ""

    def __init__(self, spec: TowerSpec) -> None:
        self.spec = spec
        self._modules: dict[str, Any] = {}  # every object holding weights; unload drops them all
        self._footprint = Footprint()
        self.note = ""

    @property
    def loaded(self) -> bool:
        return bool(self._modules)

    def load(self) -> LoadInfo:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the worker's stderr is a log, not a progress UI
        check_quantization(self.spec, self.QUANTS, self.QUANT_WHY)
        folder = model_folder(self.spec)
        spec, self.note = fit_spec(self.spec)
        probe = hf_loading.MemoryProbe()
        with Stopwatch() as sw:
            details = self._load(spec, folder)
        tensors = [m for m in self._modules.values() if isinstance(m, torch.nn.Module)]
        self._footprint, measured = footprint_of(tensors, probe)
        note = "; ".join(n for n in (self.note, hf_loading.placement(spec).note, details.pop("note", "")) if n)
        if note:
            details["note"] = note
        details.update(measured, path=str(folder), device=spec.device, quantization=spec.quantization)
        return LoadInfo(ms=sw.ms, origin=self.spec.source.kind, details=details)

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        raise NotImplementedError

    def _need(self, key: str) -> Any:
        if key not in self._modules:
            raise InternalError(f"tower {self.spec.name!r} is not loaded")
        return self._modules[key]

    def unload(self) -> None:
        self._modules.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def footprint(self) -> Footprint:
        return self._footprint

    def torch_module(self) -> torch.nn.Module | None:
        """Every weight-holding module as one tree, for the residency manager's warm tier (one copy per swap)."""
        mods = {k: m for k, m in self._modules.items() if isinstance(m, torch.nn.Module)}
        return torch.nn.ModuleDict(mods) if mods else None

    def warmup(self) -> None:  # subclasses run one tiny real step
        pass
