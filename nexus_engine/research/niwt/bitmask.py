"""Feature bitmask: the lab's verdict for one teacher and one task, as a versioned, validated JSON file.

The schema is `bitmask.schema.json` beside this file (JSON Schema 2020-12). `validate` checks a document
against it with a small validator for the keywords the schema uses (type, const, enum, required, properties,
additionalProperties, items, minItems, minimum, maximum, minLength, pattern, $ref), then checks what a schema
cannot say: keep has num_layers entries, skipped is exactly the false ones, scores have one value per layer.
`load_bitmask` and `save_bitmask` both validate, so a malformed file is refused on the way in and the way out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from nexus_engine import paths
from nexus_engine.errors import BadInputError

SCHEMA_PATH = Path(__file__).with_name("bitmask.schema.json")
SCHEMA_NAME, VERSION = "nexus.niwt.bitmask", 1


class BitmaskError(BadInputError):
    """A bitmask file that does not match the schema (the message lists every problem with its JSON path)."""


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


_TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return name == "number" or float(value).is_integer()
    return isinstance(value, _TYPES[name])


def _check(value: Any, sch: dict[str, Any], where: str, root: dict[str, Any], errors: list[str]) -> None:
    if "$ref" in sch:
        target: Any = root
        for part in sch["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        sch = target
    if "type" in sch:
        types = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]
        if not any(_type_ok(value, t) for t in types):
            errors.append(f"{where}: expected {' or '.join(types)}, got {type(value).__name__}")
            return
    if "const" in sch and value != sch["const"]:
        errors.append(f"{where}: must be {sch['const']!r}, got {value!r}")
    if "enum" in sch and value not in sch["enum"]:
        errors.append(f"{where}: {value!r} is not one of {sch['enum']}")
    if isinstance(value, str):
        if len(value) < sch.get("minLength", 0):
            errors.append(f"{where}: empty string")
        if "pattern" in sch and not re.search(sch["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {sch['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in sch and value < sch["minimum"]:
            errors.append(f"{where}: {value} < {sch['minimum']}")
        if "maximum" in sch and value > sch["maximum"]:
            errors.append(f"{where}: {value} > {sch['maximum']}")
    if isinstance(value, list):
        if len(value) < sch.get("minItems", 0):
            errors.append(f"{where}: needs at least {sch['minItems']} items")
        for i, item in enumerate(value):
            if "items" in sch:
                _check(item, sch["items"], f"{where}[{i}]", root, errors)
    if isinstance(value, dict):
        for key in sch.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        props = sch.get("properties", {})
        extra = sch.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                _check(item, props[key], f"{where}.{key}", root, errors)
            elif extra is False:
                errors.append(f"{where}: unknown key {key!r}")
            elif isinstance(extra, dict):
                _check(item, extra, f"{where}.{key}", root, errors)


def validate(doc: Any) -> None:
    """Raise BitmaskError naming every problem; return None for a valid document."""
    sch = schema()
    errors: list[str] = []
    _check(doc, sch, "$", sch, errors)
    if not errors:  # consistency the schema cannot express
        n = doc["teacher"]["num_layers"]
        keep = doc["layers"]["keep"]
        if len(keep) != n:
            errors.append(f"$.layers.keep: {len(keep)} entries for {n} layers")
        if doc["layers"]["skipped"] != [i for i, k in enumerate(keep) if not k]:
            errors.append("$.layers.skipped: must list exactly the indices where keep is false, ascending")
        if keep and not any(keep):
            errors.append("$.layers.keep: a mask must keep at least one layer")
        for name, scores in doc["importance"]["scores"].items():
            if len(scores) != n:
                errors.append(f"$.importance.scores.{name}: {len(scores)} values for {n} layers")
        for i, sub in enumerate(doc.get("subspaces", [])):
            if sub["layer"] > n:  # residual site n is the last layer's output
                errors.append(f"$.subspaces[{i}].layer: {sub['layer']} is past the last layer")
    if errors:
        raise BitmaskError("invalid NIWT bitmask:\n  " + "\n  ".join(errors[:20]),
                           "see docs/research.md and nexus_engine/research/niwt/bitmask.schema.json")


def load_bitmask(path: Path | str) -> dict[str, Any]:
    """Read and validate a bitmask file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise BitmaskError(f"cannot read bitmask {path}: {e}", "pass a JSON file written by `nexus profile`") from e
    validate(doc)
    return doc


def save_bitmask(doc: dict[str, Any], path: Path | str) -> Path:
    """Validate, then write atomically (a temp file renamed into place)."""
    validate(doc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def kept_layers(doc: dict[str, Any]) -> list[int]:
    return [i for i, k in enumerate(doc["layers"]["keep"]) if k]


def provenance(command: str = "", notes: str = "", data: dict[str, str] | None = None) -> dict[str, Any]:
    """When, by which Nexus version and commit, from which data."""
    try:
        version = metadata.version("nexus-assistant")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit: str | None = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True,
                                             text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "nexus_version": version,
            "git_commit": commit, "command": command, "data": dict(data or {}), "notes": notes}


def new_bitmask(*, teacher: dict[str, Any], task: dict[str, Any], skipped: list[int],
                importance: dict[str, Any], metrics: dict[str, Any], prov: dict[str, Any],
                subspaces: list[dict[str, Any]] | None = None, strategy: str = "") -> dict[str, Any]:
    """Assemble (not yet validated) a version-1 document."""
    n = teacher["num_layers"]
    doc: dict[str, Any] = {
        "schema": SCHEMA_NAME, "version": VERSION, "teacher": teacher, "task": task,
        "layers": {"keep": [i not in set(skipped) for i in range(n)], "skipped": sorted(set(skipped)),
                   "strategy": strategy},
        "importance": importance, "metrics": metrics, "provenance": prov}
    if subspaces is not None:
        doc["subspaces"] = subspaces
    return doc
