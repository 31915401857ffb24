"""Activation recording: chosen layers' outputs on a task's data, streamed to safetensors shards.

Sites (names `SITE.LAYER` inside a shard, each [n_tokens, width]):
- `residual.i`: the residual stream entering layer i; `residual.L` is the last layer's output (before the final
  norm). So `residual.i+1` is layer i's output.
- `mlp.i`: the MLP's hidden activation (the input of its down projection, width = intermediate size).
- `attn.i`: the attention block's output (what it adds to the residual stream).
Every shard also holds `tokens` [n] (int64 ids), `example` [n] and `position` [n] (int32): which input row and
position each activation row came from. Padding is never recorded.

Rows are buffered until `shard_tokens` are held, then written (`shard-00000.safetensors`, …), so memory stays
bounded by one shard whatever the data set size. `manifest.json` (written last) names the model, its revision,
the dataset hash, the sites and dtype, and every shard with its token count. `iter_activation_shards` reads
them back, one shard at a time, only the tensors asked for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nexus_engine.errors import BadInputError, NexusError
from nexus_engine.research.niwt import stack as st

FORMAT, VERSION = "nexus.niwt.activations", 1
SITES = ("residual", "mlp", "attn")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
FP16_MAX = 65000.0  # a float16 shard would overflow past this: such a tensor is stored as float32
RERECORD = "record them again with `nexus profile record` (or `nexus profile run`)"


class ActivationError(BadInputError, ValueError):
    """Recorded activations that cannot be used: no or foreign manifest, a missing, altered or corrupt shard.

    Also a ValueError, so callers written against the bare safetensors errors (`except ValueError`) still catch it.
    """


@dataclass
class RecordConfig:
    sites: tuple[str, ...] = ("residual",)
    layers: Sequence[int] | None = None  # None: every layer (and residual.L)
    shard_tokens: int = 8192  # rows per shard: the memory bound
    dtype: str = "float16"
    batch: int = 4


class _Hooks:
    """Forward hooks that stash one batch's activations per site name."""

    def __init__(self, stack: st.Stack, cfg: RecordConfig) -> None:
        self.got: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []
        layers = range(stack.n_layers + 1) if cfg.layers is None else cfg.layers
        for i in layers:
            if "residual" in cfg.sites:
                target = stack.layers[i] if i < stack.n_layers else stack.norm
                self.handles.append(target.register_forward_pre_hook(self._pre(f"residual.{i}"), with_kwargs=True))
            if i >= stack.n_layers:
                continue
            layer = stack.layers[i]
            if "mlp" in cfg.sites:
                mlp = getattr(layer, st.sub_module(layer, st.MLP_NAMES, "mlp"))
                down = getattr(mlp, "down_proj", None)
                if isinstance(down, nn.Module):
                    self.handles.append(down.register_forward_pre_hook(self._pre(f"mlp.{i}"), with_kwargs=True))
                else:  # no down projection to tap (MoE blocks…): record the MLP's output instead
                    self.handles.append(mlp.register_forward_hook(self._post(f"mlp.{i}")))
            if "attn" in cfg.sites:
                attn = getattr(layer, st.sub_module(layer, st.ATTN_NAMES, "attention"))
                self.handles.append(attn.register_forward_hook(self._post(f"attn.{i}")))

    def _pre(self, name: str) -> Any:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            self.got[name] = (args[0] if args else kwargs["hidden_states"]).detach()
        return hook

    def _post(self, name: str) -> Any:
        def hook(_m: nn.Module, _args: tuple, out: Any) -> None:
            self.got[name] = (out[0] if isinstance(out, tuple) else out).detach()
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.inference_mode()
def record_activations(model: nn.Module, sequences: Sequence[Sequence[int]], out_dir: Path, *,
                       model_info: dict[str, Any], dataset: dict[str, Any],
                       cfg: RecordConfig | None = None, pad_id: int = 0) -> dict[str, Any]:
    """Run `sequences` (token ids, one list per example) through `model`, write shards + manifest to out_dir.

    model_info: tower, model_type, revision… (copied into the manifest). dataset: name, hash (and any notes).
    """
    cfg = cfg or RecordConfig()
    if unknown := set(cfg.sites) - set(SITES):
        raise NexusError(f"unknown activation sites {sorted(unknown)}", f"use some of {', '.join(SITES)}")
    stack = st.decoder_stack(model)
    if cfg.layers is not None and (bad := [i for i in cfg.layers if not 0 <= i <= stack.n_layers]):
        raise NexusError(f"layers {bad} do not exist: the model has layers 0..{stack.n_layers - 1}",
                         f"residual.{stack.n_layers} is the last layer's output; other sites stop at "
                         f"{stack.n_layers - 1}")
    if not sequences or any(len(s) == 0 for s in sequences):
        raise NexusError("nothing to record: no sequences, or an empty one", "pass token id lists with >= 1 token")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("shard-*.safetensors"):  # a previous recording's shards would be mixed in
        old.unlink()
    (out_dir / "manifest.json").unlink(missing_ok=True)
    hooks = _Hooks(stack, cfg)
    writer = _ShardWriter(out_dir, cfg)
    try:
        for start in range(0, len(sequences), cfg.batch):
            rows = [list(s) for s in sequences[start:start + cfg.batch]]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=stack.device)
            valid = torch.tensor([[t < len(r) for t in range(width)] for r in rows], device=stack.device)
            hooks.got.clear()
            st.logits_at(model, ids, torch.tensor([width - 1], device=stack.device))  # logits are not needed
            example = torch.arange(start, start + len(rows), device=stack.device)[:, None].expand(-1, width)
            position = torch.arange(width, device=stack.device)[None, :].expand(len(rows), -1)
            batch = {name: t[valid] for name, t in hooks.got.items()}
            batch.update(tokens=ids[valid], example=example[valid].int(), position=position[valid].int())
            writer.add(batch)
        writer.flush()
    finally:
        hooks.remove()
    names = sorted(writer.names, key=_site_order)
    manifest = {
        "format": FORMAT, "version": VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {**model_info, "num_layers": stack.n_layers},
        "dataset": {**dataset, "examples": len(sequences)},
        "sites": {s: sorted({int(n.split(".")[1]) for n in names if n.startswith(s + ".")}) for s in cfg.sites},
        "tensors": names, "dtype": cfg.dtype, "tokens": writer.total,
        "shards": writer.shards,
        "layout": "each shard: SITE.LAYER [n, width]; tokens [n] int64; example, position [n] int32",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _site_order(name: str) -> tuple[int, int]:
    site, _, layer = name.partition(".")
    return SITES.index(site), int(layer)


class _ShardWriter:
    def __init__(self, out_dir: Path, cfg: RecordConfig) -> None:
        self.dir, self.cfg = out_dir, cfg
        self.buf: dict[str, list[torch.Tensor]] = {}
        self.held = self.total = 0
        self.shards: list[dict[str, Any]] = []
        self.names: set[str] = set()

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        for k, v in batch.items():
            self.buf.setdefault(k, []).append(v.cpu())
        self.held += len(batch["tokens"])
        if self.held >= self.cfg.shard_tokens:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.held:
            return
        tensors = {}
        for k, parts in self.buf.items():
            t = torch.cat(parts)
            if k not in ("tokens", "example", "position"):
                self.names.add(k)
                want = _DTYPES[self.cfg.dtype]
                if want == torch.float16 and float(t.abs().max()) > FP16_MAX:
                    want = torch.float32
                t = t.to(want)
            tensors[k] = t.contiguous()
        name = f"shard-{len(self.shards):05d}.safetensors"
        save_file(tensors, str(self.dir / name), metadata={"format": FORMAT, "version": str(VERSION)})
        with (self.dir / name).open("rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        self.shards.append({"file": name, "tokens": self.held, "sha256": sha})
        self.total += self.held
        self.buf, self.held = {}, 0


def read_manifest(folder: Path | str) -> dict[str, Any]:
    """The manifest of a recording, checked for format, version and the keys readers rely on."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ActivationError(f"no activation manifest at {path}",
                              "record activations with `nexus profile record` first") from e
    except (OSError, ValueError) as e:
        raise ActivationError(f"activation manifest {path} is unreadable: {e}", RERECORD) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ActivationError(f"{path} is not a {FORMAT} v{VERSION} manifest", RERECORD)
    missing = [k for k in ("model", "dataset", "sites", "tensors", "tokens", "shards") if k not in manifest]
    shards = manifest.get("shards")
    if missing or not isinstance(shards, list) or not all(isinstance(x, dict) and {"file", "tokens"} <= set(x)
                                                          for x in shards):
        raise ActivationError(f"activation manifest {path} is incomplete (missing {missing or 'shard entries'})",
                              RERECORD)
    return manifest


def iter_activation_shards(folder: Path | str, names: Sequence[str] | None = None, dtype: torch.dtype = torch.float32,
                           verify: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Yield each shard as {name: tensor}, reading only `names` (plus tokens/example/position), floats as `dtype`.

    `verify`: check each shard's sha256 against the manifest before reading it (a shard written by another
    recording, truncated or altered is refused with ActivationError instead of silently mixing in).
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    manifest = read_manifest(folder)
    if names is not None and (unknown := sorted(set(names) - set(manifest["tensors"]))):
        have = manifest["tensors"]
        raise ActivationError(f"{folder} has no recorded {', '.join(unknown)}",
                              f"recorded: {', '.join(have[:8])}{' …' if len(have) > 8 else ''}")
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        if verify and shard.get("sha256"):
            try:
                with path.open("rb") as f:
                    sha = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError as e:
                raise ActivationError(f"activation shard {path} is missing: {e.strerror or e}", RERECORD) from e
            if sha != shard["sha256"]:
                raise ActivationError(f"activation shard {path} does not match its manifest (sha256 differs): it "
                                      "was altered, truncated or written by another recording", RERECORD)
        out: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if names is None or key in names or key in ("tokens", "example", "position"):
                        t = f.get_tensor(key)
                        out[key] = t.to(dtype) if t.is_floating_point() else t
        except (OSError, SafetensorError) as e:
            raise ActivationError(f"activation shard {path} cannot be read: {e}", RERECORD) from e
        wanted = manifest["tensors"] if names is None else names
        rows = {k: len(t) for k, t in out.items()}
        if set(wanted) - set(out) or any(r != shard["tokens"] for r in rows.values()):
            raise ActivationError(f"activation shard {path} does not hold what its manifest says "
                                  f"({shard['tokens']} rows of {', '.join(wanted)}; found {rows})", RERECORD)
        yield out
