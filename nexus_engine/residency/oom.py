"""Out of memory while loading a tower: recognising it, reading what it needed, and measuring a load's CUDA peak.

The residency manager undoes such a load, corrects the tower's size from these numbers and decides again
(manager.py). torch is only looked at when something already imported it: a CPU-only starter pack never pays
for the import.
"""

from __future__ import annotations

import re
import sys
from typing import Any


class OutOfMemoryOnLoad(Exception):
    def __init__(self, tower: str, device: str, need: int | None, detail: str, ms: float, surprise: bool) -> None:
        super().__init__(detail)
        self.tower, self.device, self.need, self.detail, self.ms = tower, device, need, detail, ms
        self.surprise = surprise  # a real allocation failure, not a measurement the budget refused


def cuda_torch() -> Any:
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def empty_cuda_cache() -> None:
    """Give freed blocks back to the driver, so the budget's free-memory probe sees them."""
    torch = cuda_torch()
    if torch is not None:
        torch.cuda.empty_cache()


def cuda_mark(gpu_device: str | None) -> int | None:
    """Before a load onto `gpu_device` (None: not a GPU load): reset the peak, return what is allocated now."""
    torch = cuda_torch()
    if gpu_device is None or torch is None or not gpu_device.startswith("cuda"):
        return None
    torch.cuda.reset_peak_memory_stats(gpu_device)
    return int(torch.cuda.memory_allocated(gpu_device))


def cuda_peak(gpu_device: str, mark: int | None) -> int:
    """Bytes the failed load had allocated at its peak (0 when unknown)."""
    torch = cuda_torch()
    if mark is None or torch is None:
        return 0
    return max(0, int(torch.cuda.max_memory_allocated(gpu_device)) - mark)


def is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, torch.OutOfMemoryError):  # torch.cuda.OutOfMemoryError is this class
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def tried_bytes(message: str) -> int:
    """The failed allocation from a CUDA OOM message ("Tried to allocate 2.00 GiB"); 0 if absent."""
    m = re.search(r"Tried to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB)", message)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else 0


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
