"""The decoder stack of a transformers causal LM, and the few ways the lab reaches into it.

Every Llama-family model (Llama, Qwen2/3, Mistral, Gemma, MiniCPM, SmolLM2…) keeps its blocks in
`model.model.layers` and a final norm in `model.model.norm`; each block has an attention module and an MLP.
The lab never re-implements a block's forward: perturbations run the model's own forward with a different
list of layers (skip), a stand-in submodule (zero attention / zero MLP), or an injected hidden state
(prefix cache). So masks, rotary embeddings, embedding and logit scaling stay whatever the model does.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nexus_engine.errors import NexusError

ATTN_NAMES = ("self_attn", "attention", "attn")
MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe")
NORM_NAMES = ("norm", "final_layernorm", "ln_f")


class UnsupportedModelError(NexusError):
    """The model's decoder stack is not laid out the way the lab expects."""


@dataclass
class Stack:
    """Handles on one causal LM: the model, its body (holds `layers`), the layer list and the final norm."""

    model: nn.Module
    body: nn.Module
    layers: nn.ModuleList
    norm: nn.Module

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device


def decoder_stack(model: nn.Module) -> Stack:
    """Find layers and final norm; UnsupportedModelError names what is missing."""
    body = getattr(model, "model", None)
    body = getattr(body, "language_model", body)  # VLM wrappers keep the text model one level down
    layers = getattr(body, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(f"{type(model).__name__}: no model.layers ModuleList",
                                    "the NIWT lab supports Llama-family decoders (model.model.layers)")
    norm = next((getattr(body, n) for n in NORM_NAMES if isinstance(getattr(body, n, None), nn.Module)), None)
    if norm is None:
        raise UnsupportedModelError(f"{type(model).__name__}: no final norm ({', '.join(NORM_NAMES)})")
    for i, layer in enumerate(layers):
        sub_module(layer, ATTN_NAMES, f"layer {i} attention")
        sub_module(layer, MLP_NAMES, f"layer {i} MLP")
    return Stack(model, body, layers, norm)


def sub_module(layer: nn.Module, names: Sequence[str], what: str) -> str:
    """The attribute name of a layer's attention or MLP."""
    for name in names:
        if isinstance(getattr(layer, name, None), nn.Module):
            return name
    raise UnsupportedModelError(f"{what}: none of {', '.join(names)} on {type(layer).__name__}")


# ------------------------------------------------------------------------------- forward helpers
def logits_at(model: nn.Module, input_ids: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Logits at positions `keep` (1-D, shared by the batch) -> [B, K, V] fp32; all positions when None.

    Asking the model for only these positions (`logits_to_keep`) skips most of the vocabulary projection,
    which on a small model costs as much as several layers.
    """
    kwargs: dict[str, Any] = {"use_cache": False}
    supports = "logits_to_keep" in inspect.signature(model.forward).parameters
    if keep is not None and supports:
        kwargs["logits_to_keep"] = keep
    out = model(input_ids=input_ids, **kwargs).logits
    if keep is not None and not supports:
        out = out[:, keep]
    return out.float()


@contextmanager
def layer_list(stack: Stack, layers: Sequence[nn.Module]) -> Iterator[None]:
    """Run the model with `layers` in place of its own list (same module objects, nothing copied)."""
    original = stack.body.layers
    stack.body.layers = nn.ModuleList(layers)
    try:
        yield
    finally:
        stack.body.layers = original


@contextmanager
def inject(module: nn.Module, hidden: torch.Tensor) -> Iterator[None]:
    """Replace the hidden state `module` receives with `hidden` (the prefix cache's stored input)."""

    def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class ZeroAttention(nn.Module):
    """Stands in for a layer's attention: contributes nothing to the residual stream."""

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        return torch.zeros_like(hidden), None


class ZeroMLP(nn.Module):
    """Stands in for a layer's MLP: contributes nothing to the residual stream."""

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(hidden)


@contextmanager
def zeroed(layer: nn.Module, part: str) -> Iterator[None]:
    """Temporarily replace a layer's attention (`part="attn"`) or MLP (`"mlp"`) with a zero module.

    The stand-in does no work, so a zeroed sub-block also costs nothing in the sweep.
    """
    name = sub_module(layer, ATTN_NAMES if part == "attn" else MLP_NAMES, part)
    original = getattr(layer, name)
    setattr(layer, name, ZeroAttention() if part == "attn" else ZeroMLP())
    try:
        yield
    finally:
        setattr(layer, name, original)


@torch.inference_mode()
def layer_inputs(stack: Stack, input_ids: torch.Tensor,
                 keep: torch.Tensor | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One unperturbed forward: the hidden state entering every layer and the final norm, and the logits.

    Returns (hs, logits): hs[i] [B, T, D] is layer i's input, hs[L] the last layer's output; logits [B, K, V].
    """
    hs: list[torch.Tensor | None] = [None] * (stack.n_layers + 1)

    def grab(i: int) -> Any:
        def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            hs[i] = args[0] if args else kwargs["hidden_states"]
        return pre_hook

    handles = [m.register_forward_pre_hook(grab(i), with_kwargs=True)
               for i, m in enumerate([*stack.layers, stack.norm])]
    try:
        logits = logits_at(stack.model, input_ids, keep)
    finally:
        for h in handles:
            h.remove()
    assert all(h is not None for h in hs), "a layer was not called: the model's forward skips layers"
    return [h.detach() for h in hs], logits  # type: ignore[union-attr]
