"""Teacher activations for AGID: recorded with the NIWT lab's recorder, read back verified.

The recording is the lab's format (docs/research.md, "Activation shards"). AGID never trusts it blindly:
every shard's sha256 must match the manifest, every tensor asked for must be there, and the manifest's model
revision must be the loaded teacher's — otherwise CorruptShardError / RevisionMismatchError say which file
and what to do. Training sequences are fixed-length windows, so rows regroup into [examples, window, width].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nexus_engine.consolidation.adapters import file_sha256
from nexus_engine.errors import NexusError
from nexus_engine.research.agid.errors import CorruptShardError
from nexus_engine.research.agid.teacher import check_teacher
from nexus_engine.research.niwt import iter_activation_shards, read_manifest, record_activations
from nexus_engine.research.niwt.record import RecordConfig

HINT = "delete the folder and record again (`nexus train text` records it when it is missing)"


def record(model: Any, windows: torch.Tensor, folder: Path, *, info: dict[str, Any], dataset: dict[str, Any],
           layers: Sequence[int], shard_tokens: int = 4096) -> dict[str, Any]:
    """Residual stream entering each of `layers` (L = the last layer's output) for every window [N, T]."""
    return record_activations(model, windows.tolist(), folder, model_info=info, dataset=dataset,
                              cfg=RecordConfig(sites=("residual",), layers=list(layers), shard_tokens=shard_tokens,
                                               dtype="float16", batch=4))


def verify(folder: Path, teacher: dict[str, Any] | None = None, dataset_hash: str | None = None) -> dict[str, Any]:
    """The manifest, after checking every shard's bytes (and the teacher's revision when given)."""
    try:
        manifest = read_manifest(Path(folder))
    except NexusError as e:
        raise CorruptShardError(f"activation folder {folder}: {e.message}", HINT) from e
    for shard in manifest.get("shards", []):
        path = Path(folder) / shard["file"]
        if not path.is_file():
            raise CorruptShardError(f"activation shard {path} is missing", HINT)
        if file_sha256(path) != shard["sha256"]:
            raise CorruptShardError(f"activation shard {path} does not match the manifest's sha256 "
                                    "(truncated or changed since it was recorded)", HINT)
    if teacher is not None:
        check_teacher(manifest["model"], teacher, f"the activations in {folder}")
    if dataset_hash is not None and manifest["dataset"].get("hash") != dataset_hash:
        raise CorruptShardError(f"the activations in {folder} were recorded on other data "
                                f"({manifest['dataset'].get('hash', '?')[:12]}, want {dataset_hash[:12]})", HINT)
    return manifest


def load_windows(folder: Path, layers: Sequence[int], window: int) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(ids [N, T] int64, {layer: residual [N, T, D] float16}) from a verified recording of fixed-length windows."""
    from safetensors import SafetensorError

    names = [f"residual.{i}" for i in layers]
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in [*names, "tokens", "example", "position"]}
    try:
        for shard in iter_activation_shards(folder, names, dtype=torch.float16):
            for n in parts:
                if n not in shard:
                    raise CorruptShardError(f"the activations in {folder} have no tensor {n!r}", HINT)
                parts[n].append(shard[n])
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptShardError(f"cannot read the activation shards in {folder}: {e}", HINT) from e
    rows = {n: torch.cat(v) for n, v in parts.items()}
    example, position = rows["example"].long(), rows["position"].long()
    n = int(example.max()) + 1 if len(example) else 0
    if len(example) != n * window or bool((position >= window).any()):
        raise CorruptShardError(f"the activations in {folder} are not {n} windows of {window} tokens", HINT)
    order = (example * window + position).argsort()  # shards are in input order already; this makes sure
    ids = rows["tokens"][order].view(n, window)
    acts = {i: rows[f"residual.{i}"][order].view(n, window, -1) for i in layers}
    return ids, acts
