"""Adapter folders: one tower's trained adapter = one safetensors file + one manifest JSON, in a folder of its own.

Layout (default root: `<data folder>/adapters`, beside the chat history; never inside the repository):

    <root>/<tower>/<kind>/adapter.safetensors    the weights (safetensors only: data, never code)
    <root>/<tower>/<kind>/manifest.json          format, kind, tower, teacher (tower, revision…), bitmask (hash),
                                                 data hashes, config, metrics, training log; written last
    <root>/<tower>/<kind>/checkpoints/           training checkpoints (resume), removed after a finished run

`<tower>` is the tower the adapter belongs to: a text student's bridges belong to the LLM they collapse, a
projector to the vision or ASR tower whose features it projects (its manifest names the LLM it feeds as
`teacher`). Training one tower's adapter writes only inside its own folder, so every other tower's adapters (and their
evaluations) stay byte for byte what they were: `tree_hashes` is how the tests check that.

No torch at import: the engine reads manifests to decide which path answers before anything loads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from nexus_engine import paths
from nexus_engine.research.agid.errors import AdapterFormatError, AdapterMismatchError

FORMAT, VERSION = "nexus.agid.adapter", 1
KINDS = ("text_bridges", "vision_projector", "audio_projector")
ADAPTER_FILE, MANIFEST = "adapter.safetensors", "manifest.json"
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "version": int, "kind": str, "tower": str, "created": str, "teacher": dict, "files": dict,
    "config": dict, "data": dict, "metrics": dict, "training": dict}


def adapters_root() -> Path:
    """`<data folder>/adapters` (NEXUS_HOME moves it with the rest of the user's data)."""
    return paths.data_dir() / "adapters"


def adapter_dir(tower: str, kind: str, root: Path | None = None) -> Path:
    if kind not in KINDS:
        raise AdapterFormatError(f"unknown adapter kind {kind!r}", f"one of: {', '.join(KINDS)}")
    return (root or adapters_root()) / tower / kind


def file_sha256(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_FILE_REVISIONS: dict[tuple[str, float, int], str] = {}  # (file, mtime, size) -> revision: hashing costs ~0.1 s


def file_revision(path: Path) -> str:
    """`sha256:<16 hex>` of a weights file that is not safetensors (NIWT's revision_of cannot see those: the
    Whisper CTranslate2 model.bin): what an audio projector's manifest records as the weights that heard."""
    st = Path(path).stat()
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _FILE_REVISIONS:
        _FILE_REVISIONS[key] = f"sha256:{file_sha256(Path(path))[:16]}"
    return _FILE_REVISIONS[key]


def asr_revision(spec: Any) -> str:
    """The revision of a faster-whisper tower's weights (its joined model.bin)."""
    from nexus_engine.towers.asr_whisper import joined_model_dir

    return file_revision(joined_model_dir(spec) / "model.bin")


def validate_manifest(doc: Any, where: str = "manifest") -> None:
    """Raise AdapterFormatError naming every problem (missing keys, wrong types, unknown format/kind)."""
    errors: list[str] = []
    if not isinstance(doc, dict):
        raise AdapterFormatError(f"{where}: not a JSON object", "write adapters with `nexus train`")
    for key, typ in _REQUIRED.items():
        if key not in doc:
            errors.append(f"missing {key!r}")
        elif not isinstance(doc[key], typ) or (isinstance(doc[key], bool) and typ is int):
            errors.append(f"{key!r} must be {getattr(typ, '__name__', typ)}")
    if not errors:
        if doc["format"] != FORMAT:
            errors.append(f"format {doc['format']!r} is not {FORMAT!r}")
        if doc["version"] != VERSION:
            errors.append(f"version {doc['version']} is not {VERSION} (written by another Nexus version)")
        if doc["kind"] not in KINDS:
            errors.append(f"kind {doc['kind']!r} is not one of {KINDS}")
        if not doc["tower"]:
            errors.append("empty 'tower'")
        for key in ("tower", "revision"):
            if not isinstance(doc["teacher"].get(key), str) or not doc["teacher"][key]:
                errors.append(f"teacher.{key} must be a non-empty string")
        if ADAPTER_FILE not in doc["files"]:
            errors.append(f"files must list {ADAPTER_FILE} with its sha256")
    if errors:
        raise AdapterFormatError(f"invalid adapter {where}: " + "; ".join(errors),
                                 "retrain the adapter with `nexus train` (docs/agid.md)")


def read_manifest(folder: Path, *, tower: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """The validated manifest of an adapter folder; AdapterMismatchError when it belongs to another tower/kind."""
    path = Path(folder) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise AdapterFormatError(f"cannot read adapter manifest {path}: {e}",
                                 "a folder without a readable manifest.json is not a finished adapter") from e
    validate_manifest(doc, str(path))
    if tower is not None and doc["tower"] != tower:
        raise AdapterMismatchError(f"{path} is an adapter for tower {doc['tower']!r}, not {tower!r}",
                                   f"point [towers.{tower}] at an adapter trained for it (`nexus train … --tower "
                                   f"{tower}`), or at {doc['tower']!r}'s own tower")
    if kind is not None and doc["kind"] != kind:
        raise AdapterMismatchError(f"{path} is a {doc['kind']} adapter, not a {kind} one",
                                   "check which adapter folder the tower's options point at")
    return doc


def load_tensors(folder: Path, manifest: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The adapter's tensors, after checking the file's sha256 against the manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / ADAPTER_FILE
    if not path.is_file():
        raise AdapterFormatError(f"{path} is missing", "retrain the adapter with `nexus train`")
    if file_sha256(path) != manifest["files"][ADAPTER_FILE]:
        raise AdapterFormatError(f"{path} does not match its manifest's sha256 (changed or damaged)",
                                 "retrain the adapter; never edit adapter files by hand")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterFormatError(f"{path} is not a readable safetensors file: {e}") from e


def write_adapter(folder: Path, tensors: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write weights, then the manifest (with the weights' sha256), each atomically; returns the manifest.

    A reader never sees a manifest whose weights are not complete: the weights are renamed into place first and
    the manifest, which names their hash, last.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{ADAPTER_FILE}.tmp-{os.getpid()}"
    # one metadata key: safetensors stores metadata as a hash map, so several keys come out in a random order and
    # the same weights would hash differently from run to run
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"nexus": f"{FORMAT}/{VERSION}/{manifest['kind']}"})
    doc = {"format": FORMAT, "version": VERSION, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           **manifest, "files": {ADAPTER_FILE: file_sha256(tmp)}}
    validate_manifest(doc)
    os.replace(tmp, folder / ADAPTER_FILE)
    write_json(folder / MANIFEST, doc)
    return doc


def write_json(path: Path, doc: Any) -> None:
    """Atomic JSON write (temp file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def installed(root: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every finished adapter under root (folders with a valid manifest), sorted by path."""
    base = root or adapters_root()
    out = []
    for manifest in sorted(base.glob(f"*/*/{MANIFEST}")):
        try:
            out.append((manifest.parent, read_manifest(manifest.parent)))
        except AdapterFormatError:
            continue  # a damaged folder is skipped here; loading it directly gives the clear error
    return out


def tree_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root: two calls differ exactly where files changed."""
    root = Path(root)
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
