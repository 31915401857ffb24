"""Where Nexus keeps its files: config (models.toml override), data (SQLite history), cache (converted weights).

`NEXUS_HOME` puts all three under one folder: how tests and portable installs isolate themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "nexus"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODELS_TOML = REPO_ROOT / "models.toml"


def _home() -> Path | None:
    home = os.environ.get("NEXUS_HOME")
    return Path(home).expanduser() if home else None


def _dir(kind: str) -> Path:
    home = _home()
    path = home / kind if home is not None else Path(getattr(platformdirs, f"user_{kind}_dir")(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    return _dir("config")


def data_dir() -> Path:
    return _dir("data")


def cache_dir() -> Path:
    """Converted weights and measured footprints. NEXUS_CACHE moves just this folder (tests share it)."""
    override = os.environ.get("NEXUS_CACHE")
    if override:
        path = Path(override).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return _dir("cache")


def user_models_toml() -> Path:
    """The user's override file; tables here merge over the shipped models.toml."""
    return config_dir() / "models.toml"


def history_db() -> Path:
    return data_dir() / "history.sqlite3"
