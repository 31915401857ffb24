"""Layer collapse: remove the layers a bitmask skips from a loaded model, for good.

The kept layers stay the same module objects (no copy), are renumbered 0..L'-1 wherever a submodule carries a
`layer_idx` (that is the slot it writes in the KV cache), and the config follows: `num_hidden_layers` and the
per-layer lists (`layer_types`…) shrink, so a fresh `DynamicCache(config=…)` has one slot per remaining layer.
The original indices are kept in `config.niwt_kept_layers`.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nexus_engine.research.niwt import stack as st
from nexus_engine.research.niwt.bitmask import BitmaskError, kept_layers, load_bitmask
from nexus_engine.towers import hf_loading

PER_LAYER_LISTS = ("layer_types", "no_rope_layers")  # config lists with one entry per decoder layer


def collapse_model(model: nn.Module, bitmask: dict[str, Any] | Path | str | list[int], *,
                   revision: str | None = None) -> dict[str, Any]:
    """Remove skipped layers in place. `bitmask`: a document, a path to one, or the list of layers to keep.

    A document must describe this model: its layer count, hidden size and model type are checked against the
    model's config, and `revision` (when the caller knows the loaded weights' revision, as `lab.revision`
    computes it) against teacher.revision. Any mismatch is a BitmaskError, before anything is changed.
    Returns {"kept": [...], "removed": [...], "layers_before": n, "layers_after": n'}.
    """
    stack = st.decoder_stack(model)
    n = stack.n_layers
    cfg = getattr(model.config, "text_config", None) or model.config
    if isinstance(bitmask, list):
        kept = sorted(set(bitmask))
    else:
        doc = bitmask if isinstance(bitmask, dict) else load_bitmask(bitmask)
        check_teacher(doc, model, revision)
        kept = kept_layers(doc)
    if not kept or kept[0] < 0 or kept[-1] >= n:
        raise BitmaskError(f"kept layers {kept} do not fit a {n}-layer model")
    previous = list(getattr(cfg, "niwt_kept_layers", None) or range(n))  # collapsing twice composes
    new_layers = nn.ModuleList([stack.layers[i] for i in kept])
    for j, layer in enumerate(new_layers):
        for mod in layer.modules():
            if isinstance(getattr(mod, "layer_idx", None), int):
                mod.layer_idx = j
    stack.body.layers = new_layers
    cfg.num_hidden_layers = len(kept)
    for name in PER_LAYER_LISTS:
        values = getattr(cfg, name, None)
        if isinstance(values, list) and len(values) == n:
            setattr(cfg, name, [values[i] for i in kept])
    cfg.niwt_kept_layers = [previous[i] for i in kept]
    return {"kept": [previous[i] for i in kept], "removed": sorted(set(previous) - {previous[i] for i in kept}),
            "layers_before": n, "layers_after": len(kept)}


def check_teacher(doc: dict[str, Any], model: nn.Module, revision: str | None = None) -> None:
    """Refuse a bitmask measured on another model (or, when `revision` is given, other weights)."""
    t = doc["teacher"]
    cfg = getattr(model.config, "text_config", None) or model.config
    if getattr(cfg, "niwt_kept_layers", None):  # a document speaks of the original layers, not the renumbered ones
        raise BitmaskError(f"this model is already collapsed (it keeps original layers {cfg.niwt_kept_layers})",
                           "apply the bitmask to the full tower (load it without the bitmask option)")
    n = st.decoder_stack(model).n_layers
    have = {"layers": n, "hidden size": getattr(cfg, "hidden_size", None),
            "model type": getattr(cfg, "model_type", None)}
    want = {"layers": t["num_layers"], "hidden size": t["hidden_size"], "model type": t["model_type"]}
    wrong = [f"{k} {want[k]} (this model: {have[k]})" for k in want if have[k] is not None and have[k] != want[k]]
    if wrong:
        raise BitmaskError(f"the bitmask was measured on another model, tower {t['tower']!r}: " + ", ".join(wrong),
                           "use the bitmask written for this tower, or run `nexus profile run` on it")
    if revision is not None and revision != t["revision"]:
        raise BitmaskError(f"the bitmask was measured on revision {t['revision']} of {t['tower']!r}; the loaded "
                           f"weights are revision {revision}",
                           "layer importance changes with the weights: run `nexus profile run` on this revision")


@torch.inference_mode()
def speed(model: nn.Module, prompt: int = 128, decode: int = 16, repeats: int = 2, vocab: int | None = None,
          seed: int = 0) -> dict[str, float]:
    """Prefill tokens/s (one `prompt`-token sequence), decode tokens/s (KV cache, greedy) and weight bytes.

    Best of `repeats` (the first also warms up): on a shared CPU the minimum is the least disturbed number.
    """
    from transformers import DynamicCache

    device = model.get_input_embeddings().weight.device
    vocab = vocab or model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, prompt), generator=torch.Generator().manual_seed(seed)).to(device)
    kw = cache_kwarg(model)
    best_pre = best_dec = float("inf")
    for _ in range(max(repeats, 1)):
        cache = DynamicCache(config=model.config)
        _sync(device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, **{kw: cache}, use_cache=True, logits_to_keep=1)
        _sync(device)
        t1 = time.perf_counter()
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(decode):
            out = model(input_ids=tok, **{kw: cache}, use_cache=True)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        best_pre, best_dec = min(best_pre, t1 - t0), min(best_dec, time.perf_counter() - t1)
    weights = sum(hf_loading.tensor_bytes(model).values())
    return {"prefill_tok_s": prompt / best_pre, "decode_tok_s": decode / best_dec, "weight_bytes": weights,
            "layers": st.decoder_stack(model).n_layers}


def cache_kwarg(model: nn.Module) -> str:
    """transformers 5.2x calls the forward's KV-cache argument `cache`; earlier releases `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
