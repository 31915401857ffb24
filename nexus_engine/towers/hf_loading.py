"""Shared helpers for towers that load Hugging Face (transformers/diffusers) weights.

Every seed-tower loader goes through these, so a spec means the same thing everywhere:
- `quantization` / `dtype` -> a torch dtype and, for nf4/int8, a bitsandbytes config;
- `device` -> where the weights go (gpu falls back to cpu with a logged warning; offload -> accelerate's
  device_map="auto");
- weights must be safetensors: a folder that only has pickle files (.bin/.pt/.pth/.ckpt can run code when
  loaded) is refused unless the tower opts in with `options.allow_pickle = true`; a truncated safetensors
  file is reported by name before transformers sees it;
- `trust_remote_code` comes only from the spec (config validation already requires a pinned revision);
- footprints are measured: tensor bytes, the process RSS delta, and the CUDA allocator delta.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import ModelMissingError, UnsafeWeightsError

log = logging.getLogger("nexus.towers.hf")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------------- dtype / quantization
def torch_dtype(spec: TowerSpec) -> torch.dtype:
    """The dtype of the weights that are not quantized (and of activations).

    An explicit `dtype` wins; else a float `quantization` names it; nf4/int8 default to bf16 (their compute
    dtype) and GGUF files are dequantized to fp32, the only dtype transformers converts them to.
    """
    if spec.dtype in _DTYPES:
        return _DTYPES[spec.dtype]
    if spec.quantization in _DTYPES:
        return _DTYPES[spec.quantization]
    return torch.float32 if spec.quantization == "gguf" else torch.bfloat16


# Layers kept unquantized (transformers matches these as module-name suffixes): the output head, and MoE
# router gates ("mlp.gate", "shared_expert_gate", never "gate_proj") — tiny, precision-sensitive, and bitsandbytes'
# CPU 4-bit kernel cannot run layers whose output size is not a multiple of 32 (a 1-output shared-expert gate).
SKIP_QUANT = ("lm_head", "gate", "router")


def bnb_config(spec: TowerSpec, offload: bool = False) -> Any | None:
    """A BitsAndBytesConfig for nf4 (4-bit NF4, double quant, bf16 compute) or int8; None otherwise."""
    if spec.quantization not in ("nf4", "int8"):
        return None
    from transformers import BitsAndBytesConfig

    skip = [*SKIP_QUANT, *spec.options.get("skip_quant_modules", [])]
    if spec.quantization == "nf4":
        compute = _DTYPES.get(spec.dtype, torch.bfloat16)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=skip,
                                  llm_int8_enable_fp32_cpu_offload=offload)
    # offloaded int8 layers stay unquantized (in the load dtype) on the CPU: bitsandbytes has no int8 kernels
    # for a CPU-resident layer of a model whose other layers are on the GPU
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip, llm_int8_enable_fp32_cpu_offload=offload)


# ------------------------------------------------------------------------------------------ placement
@dataclass(frozen=True)
class Placement:
    """Where a model goes: `device` is the main device, `device_map` what from_pretrained gets (or None)."""

    device: torch.device
    device_map: str | dict[str, Any] | None
    note: str = ""  # why it differs from what the spec asked, shown in LoadInfo details


_warned: set[str] = set()


def placement(spec: TowerSpec, quantized: bool = False) -> Placement:
    cuda = torch.cuda.is_available()
    if spec.device == "offload":
        # accelerate fills the GPU first and spills whole layers to RAM (and runs on CPU without a GPU)
        return Placement(torch.device("cuda:0" if cuda else "cpu"), "auto",
                         "" if cuda else "no CUDA GPU: offload ran everything on the CPU")
    if spec.device == "gpu":
        if cuda:
            return Placement(torch.device("cuda:0"), {"": 0})
        note = "no CUDA GPU found: running on the CPU (slow)"
        if spec.name not in _warned:  # once per tower, not on every call
            _warned.add(spec.name)
            log.warning("tower %s asks for the GPU; %s", spec.name, note)
        return Placement(torch.device("cpu"), {"": "cpu"} if quantized else None, note)
    # bitsandbytes layers need an explicit device_map, otherwise transformers refuses to quantize
    return Placement(torch.device("cpu"), {"": "cpu"} if quantized else None)


# --------------------------------------------------------------------------------------- safe weights
def weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle files) in a model folder (not recursive: that is the HF layout)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return ([p for p in files if p.suffix == ".safetensors"],
            [p for p in files if p.suffix in PICKLE_SUFFIXES and not p.name.startswith("training_args")])


def check_weights(spec: TowerSpec, folder: Path) -> bool:
    """Refuse unsafe or broken weights before loading; returns the `use_safetensors` to pass on.

    safetensors present -> each is checked for truncation, True. Only pickle -> UnsafeWeightsError unless
    `options.allow_pickle` (then False). Nothing -> ModelMissingError.
    """
    if not folder.is_dir():
        raise ModelMissingError(f"tower {spec.name!r}: {folder} is not a model folder",
                                f"point source at the folder that holds config.json and the weights "
                                f"in [towers.{spec.name}]")
    safe, pickled = weight_files(folder)
    if safe:
        for path in safe:
            check_safetensors(path)
        return True
    if pickled:
        if spec.options.get("allow_pickle") is True:
            log.warning("tower %s loads pickle weights (%s): allowed by options.allow_pickle", spec.name,
                        pickled[0].name)
            return False
        raise UnsafeWeightsError(
            f"tower {spec.name!r}: {pickled[0]} is a pickle file, which can run code when loaded, and the folder "
            "has no .safetensors weights",
            f"convert the weights to safetensors, or set options.allow_pickle = true in [towers.{spec.name}] "
            "if you trust where they came from")
    raise ModelMissingError(f"tower {spec.name!r}: no weights (*.safetensors) in {folder}",
                            "download the model's weights into that folder")


def check_safetensors(path: Path) -> None:
    """Read the header and check the file is as long as the header says: catches truncated downloads."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size, 100 << 20):
                raise ValueError(f"header length {n} is impossible for a {size}-byte file")
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ModelMissingError(f"{path} is not a readable safetensors file ({e})",
                                "the download is corrupt or incomplete: download the model again") from e
    if size < 8 + n + end:
        raise ModelMissingError(f"{path} is truncated: {size} bytes, the header needs {8 + n + end}",
                                "the download is incomplete: download the model again")


def from_pretrained_kwargs(spec: TowerSpec, folder: Path) -> dict[str, Any]:
    """The keyword arguments every transformers `from_pretrained` of a tower gets (weights checked here)."""
    use_safetensors = check_weights(spec, folder)
    quant = bnb_config(spec, offload=spec.device == "offload")
    where = placement(spec, quantized=quant is not None)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(spec), "use_safetensors": use_safetensors,
                              "trust_remote_code": spec.trust_remote_code}
    if quant is not None:
        kwargs["quantization_config"] = quant
    if where.device_map is not None:
        kwargs["device_map"] = where.device_map
    return kwargs


# ------------------------------------------------------------------------------------------ footprints
def tensor_bytes(module: torch.nn.Module) -> dict[str, int]:
    """Bytes of parameters + buffers by device type ("cpu", "cuda", "meta"); shared (tied) tensors once."""
    seen: set[int] = set()
    out: dict[str, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        key = t.data_ptr() if t.device.type != "meta" else id(t)
        if key in seen:
            continue
        seen.add(key)
        out[t.device.type] = out.get(t.device.type, 0) + t.numel() * t.element_size()
    return out


class MemoryProbe:
    """`probe = MemoryProbe(); …load…; probe.delta()` -> RSS and CUDA-allocated growth since creation."""

    def __init__(self) -> None:
        self.rss0 = psutil.Process().memory_info().rss
        self.cuda0 = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0

    def delta(self) -> dict[str, int]:
        rss = psutil.Process().memory_info().rss - self.rss0
        cuda = (torch.cuda.memory_allocated() - self.cuda0) if torch.cuda.is_available() else 0
        return {"rss_delta": rss, "cuda_allocated_delta": cuda}


def measured_footprint(module: torch.nn.Module, probe: MemoryProbe) -> tuple[int, int, dict[str, int]]:
    """(ram, vram, details) of a loaded model.

    RAM is the bytes of tensors in CPU memory: exact and stable, whereas the RSS delta also counts transient
    conversion buffers and allocator slack (it is kept in the details). VRAM is the larger of the tensor
    bytes on the GPU and the allocator's growth, which includes what the load left in the CUDA cache.
    """
    by_device = tensor_bytes(module)
    delta = probe.delta()
    ram = by_device.get("cpu", 0)
    vram = max(by_device.get("cuda", 0), delta["cuda_allocated_delta"])
    return ram, vram, {**{f"{k}_tensor_bytes": v for k, v in by_device.items()}, **delta}
