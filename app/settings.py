"""The app's settings: a small JSON file in the user config folder (nexus_engine.paths), saved between runs.

JSON rather than QSettings so the file is readable, diffable and testable without Qt, and lives next to the
user's models.toml override. Loading never fails: a missing file gives the defaults, a damaged one is kept aside
as `app-settings.json.bad` (so nothing the user wrote is silently lost) and the defaults are used, a value of the
wrong type falls back to its default.

Settings that change how the engine worker starts (profile, budgets, GPU) are turned into the worker's
environment by `engine_env()`; they take effect when the engine restarts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from nexus_engine import atomic, paths
from nexus_engine.config.units import parse_bytes

log = logging.getLogger("nexus.app.settings")
FILE_NAME = "app-settings.json"


@dataclass
class AppSettings:
    profile: str = ""  # "": the default_profile of models.toml
    vram_budget: str = ""  # "": all of the GPU; else a size such as "16GiB"
    ram_budget: str = ""
    gpu: str = "auto"  # auto | cpu | cuda:N
    mic: str = ""  # input device name; "": the system default
    speaker: str = ""
    persona: str = ""  # the system prompt of new conversations
    data_dir: str = ""  # "": nexus_engine.paths.data_dir()
    theme: str = "dark"  # dark | light
    max_tokens: int = 512
    hands_free: bool = False
    barge_in: bool = True
    geometry: str = ""  # the main window's saved geometry (hex)

    def history_path(self) -> Path:
        return self.data_path() / "history.sqlite3"

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else paths.data_dir()

    def attachments_dir(self) -> Path:
        return self.data_path() / "attachments"

    def generations_dir(self) -> Path:
        return self.data_path() / "generations"


def settings_path() -> Path:
    return paths.config_dir() / FILE_NAME


def load(path: Path | None = None) -> AppSettings:
    path = Path(path or settings_path())
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AppSettings()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("settings file %s is damaged (%s); using defaults", path, e)
        try:
            path.replace(path.with_name(path.name + ".bad"))
        except OSError:
            pass
        return AppSettings()
    if not isinstance(raw, dict):
        return AppSettings()
    defaults = AppSettings()
    values: dict[str, Any] = {}
    for f in fields(AppSettings):
        value = raw.get(f.name, getattr(defaults, f.name))
        wanted = type(getattr(defaults, f.name))
        if isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
            values[f.name] = value
    return AppSettings(**values)


def save(settings: AppSettings, path: Path | None = None) -> None:
    """Write atomically, so a crash mid-save leaves the old file rather than half a new one."""
    path = Path(path or settings_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(asdict(settings), indent=2, sort_keys=True))  # temp + fsync + rename


def check_budget(text: str) -> str | None:
    """None if `text` is empty or a size ("16GiB", "12 GB"), else what is wrong with it."""
    if not text.strip():
        return None
    try:
        parse_bytes(text.strip())
    except ValueError as e:
        return str(e)
    return None


def engine_env(settings: AppSettings) -> dict[str, str]:
    """The worker's environment for these settings.

    NEXUS_VRAM_BUDGET / NEXUS_RAM_BUDGET are read by the residency manager (see docs/app.md); the GPU choice
    is CUDA_VISIBLE_DEVICES, which every CUDA library honours: "cpu" hides all GPUs from the worker.
    """
    env: dict[str, str] = {}
    if settings.vram_budget.strip():
        env["NEXUS_VRAM_BUDGET"] = str(parse_bytes(settings.vram_budget.strip()))
    if settings.ram_budget.strip():
        env["NEXUS_RAM_BUDGET"] = str(parse_bytes(settings.ram_budget.strip()))
    if settings.gpu == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif settings.gpu.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = settings.gpu.split(":", 1)[1]
    return env
