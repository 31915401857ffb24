"""Shared fixtures: every test gets its own NEXUS_HOME, so config, history and caches never leak between tests.

Tests that need converted weights (converting the starter GGUF takes ~16 s) use `shared_cache` and set
NEXUS_CACHE to it, so the conversion happens once per test session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def nexus_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "nexus-home"
    home.mkdir()
    monkeypatch.setenv("NEXUS_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("NEXUS_ALLOW_HUB", raising=False)
    return home


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir that lives for the whole test session (for expensive conversions)."""
    path = Path(os.environ.get("NEXUS_TEST_CACHE") or tmp_path_factory.mktemp("shared-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path
