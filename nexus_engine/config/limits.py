"""Resource limits on outside input: the `[limits]` table of models.toml.

Each limit is checked before the expensive step it protects: image pixels from the file header (before any pixel
is decoded), audio and video length from the container's metadata (before decoding, and again while decoding for
files whose header lies or says nothing), prompt size before tokenizing, generation size before a tower loads.
They live in models.toml (not the app's settings) because the worker enforces them and the worker reads
models.toml; the app's own early checks read the same values, so both sides refuse the same files.

`active()` is the process-wide value: the worker's Engine activates its config's limits, everything else (the
CLI, the app, tests) gets the shipped/user models.toml limits, or the defaults when that cannot be read.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, fields
from typing import Any

from nexus_engine.config.units import parse_count


@dataclass(frozen=True)
class Limits:
    image_pixels: int = 50_000_000  # a 200 MP image decodes to ~600 MB of RGB, and no tower looks at that much
    audio_seconds: float = 4 * 3600.0  # long-form transcription reads hours; longer files are refused
    video_seconds: float = 4 * 3600.0  # longer than LONG_S (2 min) is read keyframes only, so this bounds time
    prompt_chars: int = 400_000  # ~100k tokens: more than any declared context; refused before tokenizing
    max_tokens: int = 8192  # the most tokens one chat answer may ask for
    image_side: int = 2048  # generated image width/height
    image_steps: int = 200  # denoising steps of one generation
    video_frames: int = 128  # frames of one generated video

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KEYS = tuple(f.name for f in fields(Limits))
_lock = threading.Lock()
_active: Limits | None = None


def parse(raw: Any) -> tuple[Limits, list[tuple[str | None, str, str]]]:
    """The [limits] table -> (Limits, problems as (key, problem, fix)). Unknown keys and values that are not
    positive numbers are problems; keys left out keep their defaults."""
    problems: list[tuple[str | None, str, str]] = []
    if raw is None:
        return Limits(), problems
    if not isinstance(raw, dict):
        return Limits(), [(None, "limits must be a table", "write [limits] with key = number lines")]
    values: dict[str, Any] = {}
    defaults = Limits()
    for key, value in raw.items():
        if key not in KEYS:
            problems.append((key, f"unknown limit {key!r}", f"known limits: {', '.join(KEYS)}"))
            continue
        kind = type(getattr(defaults, key))
        try:
            number = parse_count(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
                raise ValueError(f"must be a positive number, got {value!r}")
            if number != number or number == float("inf"):
                raise ValueError(f"must be a finite number, got {value!r}")
            values[key] = kind(number)
        except (ValueError, OverflowError) as e:
            problems.append((key, str(e), f"write {key} = {getattr(defaults, key)!r} (or a count like 50M)"))
    return Limits(**values), problems


def activate(limits: Limits) -> None:
    """Make `limits` the process-wide value (the worker does this with its config's limits)."""
    global _active
    with _lock:
        _active = limits


def active() -> Limits:
    """The limits in force: the activated ones, else those of the shipped + user models.toml, else defaults."""
    global _active
    with _lock:
        if _active is not None:
            return _active
    try:
        from nexus_engine.config.load import load_config

        found = load_config().limits
    except Exception:  # a broken models.toml is reported where it is loaded; limits fall back to safe defaults
        found = Limits()
    with _lock:
        if _active is None:
            _active = found
        return _active


def reset() -> None:
    """Forget the activated limits (tests that switch NEXUS_HOME)."""
    global _active
    with _lock:
        _active = None
