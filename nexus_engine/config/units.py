"""Human sizes both ways: "16GiB" -> bytes, "4B" params -> count, bytes -> "1.2 GiB"."""

from __future__ import annotations

import re

_BYTES = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_COUNT = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def _finite(value: float) -> None:
    if value != value or value in (float("inf"), float("-inf")):  # TOML has inf and nan; int() of them overflows
        raise ValueError(f"{value} is not a finite number")


def parse_bytes(value: str | int | float) -> int:
    """'16GiB' -> 17179869184. Raises ValueError with the accepted forms."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        _finite(value)
        if value < 0:
            raise ValueError(f"size must be >= 0, got {value}")
        return int(value)
    m = _RE.match(str(value))
    if not m or m.group(2).lower() not in _BYTES:
        raise ValueError(f"not a size: {value!r} (use e.g. 512MiB, 16GiB, 2GB or a byte count)")
    return int(float(m.group(1)) * _BYTES[m.group(2).lower()])


def parse_count(value: str | int | float) -> int:
    """'4B' -> 4_000_000_000, '135M' -> 135_000_000 (parameter counts)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        _finite(value)
        return int(value)
    m = _RE.match(str(value))
    if not m or m.group(2).lower() not in _COUNT:
        raise ValueError(f"not a parameter count: {value!r} (use e.g. 135M, 4B, 30B)")
    return int(float(m.group(1)) * _COUNT[m.group(2).lower()])


def fmt_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
