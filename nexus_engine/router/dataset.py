"""Labelled routing examples: JSONL lines of {"prompt", "attachments", "towers", "voice"?, "context"?}.

`towers` holds roles (primary first), `attachments` kinds or file names; other keys (template, source) are kept
for the generator's bookkeeping and ignored here. The shipped splits live in data/router/: train.jsonl (the gate
learns from it), test.jsonl (templates and real items the training never sees) and heldout.jsonl (written by
hand, independently of the generator).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus_engine import paths
from nexus_engine.config.schema import ROLES
from nexus_engine.errors import NexusError

DATA_DIR = paths.REPO_ROOT / "data" / "router"
TRAIN, TEST, HELDOUT = DATA_DIR / "train.jsonl", DATA_DIR / "test.jsonl", DATA_DIR / "heldout.jsonl"


@dataclass(frozen=True)
class Example:
    prompt: str
    towers: tuple[str, ...]
    attachments: tuple[str, ...] = ()
    voice: bool = False
    context: tuple[Any, ...] = field(default=())  # earlier turns: strings or {"role", "text"} dicts
    group: str = ""  # the generator's template id: cross-validation keeps a template's examples together


def parse(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise NexusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt, towers = obj.get("prompt", ""), obj.get("towers")
    if not isinstance(prompt, str):
        raise NexusError(f"{where}: \"prompt\" must be a string")
    if not isinstance(towers, list) or not towers or not all(isinstance(t, str) for t in towers):
        raise NexusError(f"{where}: \"towers\" must be a non-empty list of roles")
    unknown = [t for t in towers if t not in ROLES]
    if unknown:
        raise NexusError(f"{where}: unknown role(s) {unknown}", f"roles are: {', '.join(ROLES)}")
    attach = obj.get("attachments") or []
    context = obj.get("context") or []
    if not isinstance(attach, list) or not isinstance(context, list):
        raise NexusError(f"{where}: \"attachments\" and \"context\" must be lists")
    return Example(prompt, tuple(towers), tuple(str(a) for a in attach), bool(obj.get("voice", False)),
                   tuple(context), str(obj.get("template", "")))


def load_jsonl(path: Path | str) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise NexusError(f"no such file: {path}", "pass a JSONL file of {\"prompt\", \"attachments\", \"towers\"}")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise NexusError(f"{path}:{n}: not JSON ({e.msg})") from e
            out.append(parse(obj, f"{path}:{n}"))
    if not out:
        raise NexusError(f"{path}: no examples")
    return out


def label_matrix(examples: Sequence[Example]) -> list[list[float]]:
    """(N, R) multi-hot targets in ROLES order."""
    return [[float(r in e.towers) for r in ROLES] for e in examples]
