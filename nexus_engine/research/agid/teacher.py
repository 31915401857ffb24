"""The frozen teacher: loading a tower for training, its revision, and the checks that tie artifacts to it.

A revision is the hub commit when the source is pinned, else a sha256 prefix of the weights file (the formula
the NIWT lab writes into bitmasks and activation manifests), so a bitmask or recording made from other weights
is refused with RevisionMismatchError instead of training a student on a mismatched trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nexus_engine.config import load_config
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import NexusError
from nexus_engine.research.agid.errors import RevisionMismatchError
from nexus_engine.research.niwt import decoder_stack
from nexus_engine.research.niwt.lab import revision_of  # re-exported: adapters record the same revision


@dataclass
class Teacher:
    model: Any
    tok: Any
    spec: TowerSpec
    revision: str

    @property
    def info(self) -> dict[str, Any]:
        return teacher_info(self.model, self.spec.name, self.revision)


def spec_of(name: str, kinds: tuple[str, ...] = ("llm",)) -> TowerSpec:
    config = load_config()
    if name not in config.towers:
        raise NexusError(f"no tower {name!r} in models.toml", f"one of: {', '.join(sorted(config.towers))}")
    spec = config.towers[name]
    if spec.kind not in kinds:
        raise NexusError(f"tower {name!r} is a {spec.kind} tower; this needs one of {', '.join(kinds)}",
                         "pick another tower (`nexus towers` lists them)")
    return spec


def load_teacher(name: str, device: str | None = None) -> Teacher:
    """Load an llm tower through its own loader (GGUF cache, dtype, safety checks), frozen, in eval mode."""
    spec = spec_of(name)
    if spec.backend != "transformers":
        raise NexusError(f"tower {name!r} runs on {spec.backend}; AGID trains against a transformers tower",
                         "use the transformers twin of the chat model (smollm2-hf on the starter pack)")
    from nexus_engine.towers.llm_transformers import TransformersChat

    tower = TransformersChat(spec)
    tower.load()
    model = tower.torch_module()
    if device is not None:
        model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model, tower.tokenizer, spec, revision_of(spec))


def teacher_info(model: Any, tower: str, revision: str) -> dict[str, Any]:
    cfg = getattr(model.config, "text_config", None) or model.config
    return {"tower": tower, "model_type": str(cfg.model_type), "architecture": type(model).__name__,
            "num_layers": decoder_stack(model).n_layers, "hidden_size": int(cfg.hidden_size), "revision": revision}


def check_teacher(expected: dict[str, Any], got: dict[str, Any], what: str) -> None:
    """`expected`: the teacher block of a bitmask/manifest; `got`: the loaded teacher's info."""
    if expected.get("revision") != got["revision"]:
        raise RevisionMismatchError(
            f"{what} was made from {expected.get('tower')} revision {expected.get('revision')}, but the loaded "
            f"teacher {got['tower']} is revision {got['revision']}",
            "re-run `nexus profile run` (or record again) on the weights you train against, or load the weights "
            "the artifact was made from")
    for key in ("num_layers", "hidden_size"):
        if key in expected and expected[key] != got[key]:
            raise RevisionMismatchError(f"{what} is for a model with {key} {expected[key]}; the teacher has "
                                        f"{got[key]}", "use the artifact made for this teacher")


def pick_device(device: str | None = None) -> torch.device:
    """cuda when there is one (bf16 autocast there), else the CPU (float32)."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA (the teacher runs in bf16, adapters keep fp32 master weights); a no-op on CPU."""
    import contextlib

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
