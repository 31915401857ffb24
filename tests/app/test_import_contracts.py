"""Import contracts checked at run time: the app process never loads torch; the engine never loads Qt."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"QT_QPA_PLATFORM": "offscreen", **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("module", ["app.main_window", "app.engine_bridge", "app.__main__", "nexus_engine.client",
                                    "nexus_engine.chat_session"])
def test_app_side_never_imports_torch(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert not loaded & {"torch", "transformers", "diffusers", "cyllama"}, loaded


@pytest.mark.parametrize("module", ["nexus_engine.worker", "nexus_engine.engine", "nexus_engine.cli.main",
                                    "nexus_engine.towers.llm_llamacpp"])
def test_engine_never_imports_qt(module: str) -> None:
    assert "PySide6" not in loaded_after(f"import {module}")
