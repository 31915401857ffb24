"""The warm tier: a torch module's weights in one page-locked host arena, brought to the GPU by one copy.

`WarmModule(module)` finds every tensor the module computes with — parameters, buffers, and the tensors
bitsandbytes keeps beside its quantized weights (Params4bit.quant_state: absmax, code, offset and the nested
state2; Int8Params and Linear8bitLt.state: CB, SCB) — and lays them out in one flat byte arena, each at a
256-byte aligned offset. Tensors are re-pointed in place (`t.data = view`), so every alias follows without the
module noticing: tied embeddings, a quant_state shared by a layer and its weight, a buffer kept under two names.

    to_host(pin)  copy the weights into the arena (page-locked when asked and possible); point the module at it
    to_device(d)  allocate one device buffer, one non_blocking copy on a side stream, point the module at it.
                  The host arena stays: weights are frozen, so to_host() afterwards only re-points, no copy back
    drop_host()   free the arena while the module runs on the device (the RAM is needed elsewhere)

One arena of bytes rather than one per dtype: a single copy moves the whole model, and each tensor's view
reinterprets its aligned slice as its own dtype. Why not `module.to("cuda")`: it copies tensor by tensor from
pageable memory, which the driver stages through a bounce buffer — measured ~13x slower on an H100 (4 vs 54 GB/s).

Not covered (WarmUnsupported, the manager then evicts to cold): meta tensors, accelerate offload hooks, and
tensors spread over several devices (a split model). Tensors a module creates after wrapping (a dynamic-RoPE
cache) are not tracked; inference towers do not do that to their weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("nexus.residency.warm")

ALIGN = 256  # bytes: every view starts where cudaMalloc would start a tensor, so kernels see aligned pointers
_BNB = "bitsandbytes"


class WarmUnsupported(Exception):
    """This module cannot be flattened; evict it cold instead."""


@dataclass
class _Slot:
    """One distinct tensor (by storage, offset, shape and strides) and every tensor object that aliases it."""

    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    holders: list[torch.Tensor] = field(default_factory=list)


def module_of(tower: Any) -> torch.nn.Module | None:
    """The torch module behind a tower: `tower.torch_module()` when it has one, else its `_model` attribute."""
    get = getattr(tower, "torch_module", None)
    module = get() if callable(get) else getattr(tower, "_model", None)
    return module if isinstance(module, torch.nn.Module) else None


def _is_bnb(obj: Any) -> bool:
    return type(obj).__module__.startswith(_BNB)


def _bnb_tensors(obj: Any, depth: int = 0) -> list[torch.Tensor]:
    """Tensors bitsandbytes keeps as attributes (quant_state and its nested state2, CB/SCB), a few levels deep."""
    out: list[torch.Tensor] = []
    for value in list(vars(obj).values()):
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif depth < 3 and _is_bnb(value) and not isinstance(value, torch.nn.Module) and hasattr(value, "__dict__"):
            out.extend(_bnb_tensors(value, depth + 1))
    return out


def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor the module computes with, each object once."""
    out: list[torch.Tensor] = []
    for m in module.modules():
        hook = getattr(m, "_hf_hook", None)
        if hook is not None and (getattr(hook, "offload", False) or getattr(hook, "weights_map", None) is not None):
            raise WarmUnsupported(f"{type(m).__name__} is offloaded by accelerate hooks")
        for t in [*m._parameters.values(), *m._buffers.values()]:
            if t is not None:
                out.append(t)
                if _is_bnb(t):  # Params4bit / Int8Params carry their quantization state as attributes
                    out.extend(_bnb_tensors(t))
        if _is_bnb(m):  # Linear8bitLt.state (MatmulLtState) holds CB/SCB after the first forward
            for name, value in vars(m).items():
                if not name.startswith("_") and _is_bnb(value) and not isinstance(value, torch.nn.Module):
                    out.extend(_bnb_tensors(value, 1))
    unique: dict[int, torch.Tensor] = {}
    for t in out:
        unique.setdefault(id(t), t)
    return list(unique.values())


def _layout(tensors: list[torch.Tensor]) -> tuple[list[_Slot], int]:
    """Group aliasing tensors into slots and give each slot an aligned offset; returns (slots, arena bytes)."""
    slots: dict[tuple, _Slot] = {}
    devices: set[torch.device] = set()
    offset = 0
    for t in tensors:
        if t.device.type == "meta":
            raise WarmUnsupported("the module has meta tensors (weights not materialized)")
        if t.numel():
            devices.add(t.device)
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), t.stride())
        slot = slots.get(key)
        if slot is None:
            nbytes = t.numel() * t.element_size()
            slot = slots[key] = _Slot(offset, nbytes, t.dtype, tuple(t.shape))
            offset += -(-nbytes // ALIGN) * ALIGN
        slot.holders.append(t)
    if len({d for d in devices if d.type != "cpu"}) > 1:
        raise WarmUnsupported(f"the module is split over {sorted(map(str, devices))}")
    return list(slots.values()), offset


class _Arena:
    """A flat byte buffer in RAM, page-locked in place with cudaHostRegister when asked and possible.

    Registered in place rather than `pin_memory=True`: torch's pinned allocator rounds every block up to a
    power of two (a 2.2 GB model would lock 4 GB) and keeps freed blocks locked in its cache, out of the
    budget's sight. Falls back to the pinned allocator, then to plain pageable memory.
    """

    def __init__(self, nbytes: int, pin: bool) -> None:
        self.buf = torch.empty(nbytes, dtype=torch.uint8)
        self.how = "pageable"
        self._registered = 0
        if not (pin and nbytes and torch.cuda.is_available()):
            return
        try:
            torch.cuda.check_error(torch.cuda.cudart().cudaHostRegister(self.buf.data_ptr(), nbytes, 0))
            self._registered, self.how = self.buf.data_ptr(), "registered"
            return
        except Exception as e:  # an old driver, a sandbox, the lock limit: try the pinned allocator
            log.info("cudaHostRegister of %d bytes failed (%s); trying pin_memory", nbytes, e)
        try:
            self.buf, self.how = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True), "pinned"
        except RuntimeError as e:
            log.warning("could not page-lock %d bytes (%s): the warm copy stays pageable (slower swap-in)", nbytes, e)

    @property
    def pinned(self) -> bool:
        return self.how != "pageable"

    def close(self) -> None:
        if self._registered:  # unlock before the memory can be freed
            torch.cuda.cudart().cudaHostUnregister(self._registered)
            self._registered = 0

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _views(buf: torch.Tensor, slots: list[_Slot]) -> list[torch.Tensor]:
    return [buf[s.offset:s.offset + s.nbytes].view(s.dtype).view(s.shape) for s in slots]


def _point(slots: list[_Slot], views: list[torch.Tensor]) -> None:
    for slot, view in zip(slots, views):
        for t in slot.holders:
            t.data = view  # in place: the Parameter object (and every reference to it) stays the same


class WarmModule:
    """The weights of one module, movable between a host arena and a device buffer. Not thread-safe."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.slots, self.nbytes = _layout(_tensors(module))
        self.n_tensors = sum(len(s.holders) for s in self.slots)
        self._arena: _Arena | None = None
        self._host_views: list[torch.Tensor] = []
        self._device_buf: torch.Tensor | None = None
        self._streams: dict[torch.device, Any] = {}

    # ------------------------------------------------------------------------------------------ state
    @property
    def has_host(self) -> bool:
        return self._arena is not None

    @property
    def pinned(self) -> bool:
        return self._arena is not None and self._arena.pinned

    @property
    def host_memory(self) -> str:
        """registered | pinned | pageable | none"""
        return self._arena.how if self._arena else "none"

    @property
    def on_device(self) -> bool:
        return self._device_buf is not None

    # ------------------------------------------------------------------------------------------ moves
    def to_host(self, pin: bool = True) -> float:
        """Point the module at the host arena (copying into it the first time); returns milliseconds."""
        t0 = time.perf_counter()
        if self._arena is None:
            arena = _Arena(self.nbytes, pin)
            views = _views(arena.buf, self.slots)
            cuda = False
            for slot, view in zip(self.slots, views):
                src = slot.holders[0].data
                cuda = cuda or src.is_cuda
                view.copy_(src, non_blocking=arena.pinned and src.is_cuda)
            if cuda:
                torch.cuda.synchronize()  # the non_blocking device-to-host copies must land before we point at them
            self._arena, self._host_views = arena, views
        _point(self.slots, self._host_views)
        self._device_buf = None  # the last views into it are gone: the caching allocator may reuse it
        return (time.perf_counter() - t0) * 1000

    def to_device(self, device: str | torch.device) -> float:
        """Swap in: one buffer on `device`, one copy from the arena, module re-pointed; returns milliseconds."""
        if self._arena is None:
            raise RuntimeError("to_device before to_host: the warm copy does not exist yet")
        device = torch.device(device)
        t0 = time.perf_counter()
        buf = torch.empty(self.nbytes, dtype=torch.uint8, device=device)
        if device.type == "cuda":
            stream = self._streams.get(device) or self._streams.setdefault(device, torch.cuda.Stream(device))
            # the buffer was allocated on the current stream; the copy runs beside it so a running tower's
            # kernels on the default stream are not blocked, and only this side stream is waited for
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                buf.copy_(self._arena.buf, non_blocking=True)
            _point(self.slots, _views(buf, self.slots))  # CPU work overlapping the DMA
            stream.synchronize()
        else:
            buf.copy_(self._arena.buf)
            _point(self.slots, _views(buf, self.slots))
        self._device_buf = buf
        return (time.perf_counter() - t0) * 1000

    def drop_host(self) -> int:
        """Free the host arena while the module runs from the device buffer; returns the bytes freed."""
        if self._arena is None or self._device_buf is None:
            return 0
        self._host_views = []
        self._arena.close()
        self._arena = None
        return self.nbytes

    def close(self) -> None:
        """Forget the module (after the tower unloaded it): unlock and free the arena."""
        self._host_views = []
        self._device_buf = None
        for slot in self.slots:
            slot.holders.clear()
        if self._arena is not None:
            self._arena.close()
            self._arena = None
