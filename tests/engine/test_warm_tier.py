"""The warm tier on real torch modules: one flat arena, every alias re-pointed, outputs unchanged by swaps.

On a CPU-only machine the "device" is a second buffer in RAM: the same code path minus the CUDA stream.
"""

from __future__ import annotations

import pytest
import torch

from nexus_engine.residency.warm import ALIGN, WarmModule, WarmUnsupported, module_of
from nexus_engine.testing import tiny_llama


def _storages(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.arange(10).unsqueeze(0) % 128).logits


def test_round_trips_keep_outputs_identical_and_weights_in_one_arena() -> None:
    model = tiny_llama(hidden=32, layers=2, seed=3)
    before = _logits(model)
    unique = {p.data_ptr(): p.numel() * p.element_size() for p in [*model.parameters(), *model.buffers()]}
    warm = WarmModule(model)
    assert sum(unique.values()) <= warm.nbytes <= sum(unique.values()) + ALIGN * len(unique)
    warm.to_host(pin=True)  # no CUDA here: pinning is skipped, the copy is pageable
    assert warm.host_memory == "pageable" and not warm.pinned
    host = _storages(model)
    assert len(host) == 1  # every parameter and buffer is a view of the arena
    for _ in range(3):
        warm.to_device("cpu")
        on_device = _storages(model)
        assert len(on_device) == 1 and on_device != host
        assert torch.equal(_logits(model), before)
        warm.to_host()
        assert _storages(model) == host  # swap-out re-points at the kept arena: no new copy
        assert torch.equal(_logits(model), before)


def test_tied_weights_stay_tied() -> None:
    model = tiny_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    warm = WarmModule(model)  # counted before the swap, while tied tensors still share a pointer
    warm.to_host(pin=False)
    warm.to_device("cpu")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # the tied pair is stored once
    assert len(warm.slots) == len({t.data_ptr() for t in [*model.parameters(), *model.buffers()]})


def test_drop_host_then_swap_out_copies_again() -> None:
    model = tiny_llama(seed=5)
    before = _logits(model)
    warm = WarmModule(model)
    warm.to_host(pin=False)
    warm.to_device("cpu")
    assert warm.drop_host() == warm.nbytes and not warm.has_host
    assert torch.equal(_logits(model), before)  # runs from the device buffer alone
    warm.to_host(pin=False)
    assert warm.has_host and torch.equal(_logits(model), before)


def test_to_device_needs_a_host_copy_first() -> None:
    warm = WarmModule(tiny_llama())
    with pytest.raises(RuntimeError, match="before to_host"):
        warm.to_device("cpu")


def test_meta_modules_are_refused() -> None:
    with torch.device("meta"):
        layer = torch.nn.Linear(4, 4)
    with pytest.raises(WarmUnsupported, match="meta"):
        WarmModule(layer)


def test_module_of_finds_the_module() -> None:
    model = tiny_llama()

    class WithMethod:
        def torch_module(self) -> torch.nn.Module:
            return model

    class WithAttribute:
        _model = model

    assert module_of(WithMethod()) is model and module_of(WithAttribute()) is model
    assert module_of(object()) is None


def _bnb_modules() -> tuple[torch.nn.Module, torch.nn.Module]:
    bnb = pytest.importorskip("bitsandbytes.nn")
    torch.manual_seed(0)
    nf4 = torch.nn.Sequential(bnb.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4",
                                             compress_statistics=True),
                              bnb.Linear4bit(64, 32, compute_dtype=torch.float32, quant_type="nf4"))
    int8 = torch.nn.Sequential(bnb.Linear8bitLt(64, 32, has_fp16_weights=False))
    try:
        nf4, int8 = nf4.to("cpu"), int8.to("cpu")  # quantizes on the way
        x = torch.randn(3, 64)
        nf4(x), int8(x)
    except Exception as e:  # a bitsandbytes build without CPU kernels
        pytest.skip(f"bitsandbytes cannot run on this CPU: {e}")
    return nf4, int8


def test_bitsandbytes_quant_state_moves_with_the_weights() -> None:
    nf4, int8 = _bnb_modules()
    x = torch.randn(3, 64)
    for model in (nf4, int8):
        before = model(x)
        warm = WarmModule(model)
        warm.to_host(pin=False)
        arena = warm._arena.buf
        lo, hi = arena.data_ptr(), arena.data_ptr() + arena.numel()
        for layer in model:
            extra = [layer.weight]
            qs = getattr(layer.weight, "quant_state", None)
            if qs is not None:  # absmax and code of the 4-bit blocks, and the nested (double) quantization
                extra += [qs.absmax, qs.code] + ([qs.state2.absmax, qs.state2.code] if qs.nested else [])
            if getattr(layer.weight, "SCB", None) is not None:
                extra.append(layer.weight.SCB)
            assert all(lo <= t.data_ptr() < hi for t in extra), type(layer).__name__
        for _ in range(2):
            warm.to_device("cpu")
            assert torch.equal(model(x), before)
            warm.to_host()
            assert torch.equal(model(x), before)
