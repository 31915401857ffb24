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


def app_modules() -> list[str]:
    import pkgutil

    import app

    return ["app", *(m.name for m in pkgutil.walk_packages(app.__path__, "app."))]


def test_every_app_module_is_covered() -> None:
    names = app_modules()
    assert {"app.main_window", "app.engine_client", "app.attachments", "app.widgets.tower_monitor"} <= set(names)


@pytest.mark.parametrize("modules", [app_modules(), ["nexus_engine.client", "nexus_engine.chat_session"]],
                         ids=["all-app-modules", "client-side-engine-modules"])
def test_app_side_never_imports_torch(modules: list[str]) -> None:
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert not loaded & {"torch", "transformers", "diffusers", "accelerate", "bitsandbytes", "cyllama"}, loaded


@pytest.mark.parametrize("module", ["nexus_engine.worker", "nexus_engine.engine", "nexus_engine.cli.main",
                                    "nexus_engine.towers.llm_llamacpp"])
def test_engine_never_imports_qt(module: str) -> None:
    assert "PySide6" not in loaded_after(f"import {module}")
