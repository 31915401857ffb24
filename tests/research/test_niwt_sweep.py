"""Perturbation sweep and layer collapse on tiny constructed models (one layer an exact identity)."""

from __future__ import annotations

import pytest
import torch

from nexus_engine import testing
from nexus_engine.research.niwt import collapse, stack, sweep

IDENTITY = 2
LAYERS = 6


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def result() -> tuple[sweep.SweepResult, sweep.SweepResult, list[sweep.Variant]]:
    model = testing.tiny_llama_with_identity(identity=IDENTITY, layers=LAYERS)
    st = stack.decoder_stack(model)
    task = testing.tiny_lm_task()
    variants = sweep.perturbations(LAYERS)
    return (sweep.run_variants(st, [task], variants, prefix=True, similarity=True),
            sweep.run_variants(st, [task], variants, prefix=False), variants)


def test_sweep_ranks_the_identity_layer_least_important(result) -> None:
    pre, _, _ = result
    base = pre.base["text"]["nll"]
    kl = {i: pre.variants[f"skip {i}"]["text"]["kl"] for i in range(LAYERS)}
    assert min(kl, key=kl.get) == IDENTITY
    assert kl[IDENTITY] == pytest.approx(0.0, abs=1e-9)
    assert pre.variants[f"skip {IDENTITY}"]["text"]["nll"] == pytest.approx(base, abs=1e-6)
    assert all(kl[i] > 1e-6 for i in range(LAYERS) if i != IDENTITY)
    for part in ("attn0", "mlp0"):  # zeroing a sub-block that contributes nothing changes nothing
        assert pre.variants[f"{part} {IDENTITY}"]["text"]["kl"] == pytest.approx(0.0, abs=1e-9)
    # a block that contains the identity layer costs what the block without it costs
    assert pre.variants[f"skip {IDENTITY - 1}-{IDENTITY}"]["text"]["nll"] == pytest.approx(
        pre.variants[f"skip {IDENTITY - 1}"]["text"]["nll"], abs=1e-6)
    # similarity: the identity layer's input and output are the same vector
    assert pre.similarity["block_influence"][IDENTITY] == pytest.approx(0.0, abs=1e-5)
    assert min(range(LAYERS), key=lambda i: pre.similarity["block_influence"][i]) == IDENTITY


def test_prefix_cache_gives_the_naive_sweeps_metrics_for_fewer_layer_forwards(result) -> None:
    pre, naive, variants = result
    assert pre.base == naive.base
    for v in variants:
        for key, value in naive.variants[v.name]["text"].items():
            assert pre.variants[v.name]["text"][key] == pytest.approx(value, abs=1e-5), (v.name, key)
    assert naive.layer_calls == pre.naive_layer_calls
    assert pre.layer_calls <= 0.6 * naive.layer_calls


def test_collapsing_the_identity_layer_changes_no_logits() -> None:
    model = testing.tiny_llama_with_identity(identity=IDENTITY, layers=LAYERS)
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        info = collapse.collapse_model(model, [i for i in range(LAYERS) if i != IDENTITY])
        after = model(input_ids=ids).logits
    assert info["removed"] == [IDENTITY] and info["layers_after"] == LAYERS - 1
    assert model.config.num_hidden_layers == LAYERS - 1
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_collapsed_model_keeps_kv_cache_slots_consistent() -> None:
    from transformers import DynamicCache

    model = testing.tiny_llama(layers=LAYERS, vocab=128, seed=3)
    info = collapse.collapse_model(model, [0, 2, 3, 5])
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    ids = torch.randint(0, 128, (1, 14), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model(input_ids=ids, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        kw = collapse.cache_kwarg(model)
        parts = [model(input_ids=ids[:, :9], use_cache=True, **{kw: cache}).logits]
        for t in range(9, 14):  # one token at a time, as in decoding
            parts.append(model(input_ids=ids[:, t:t + 1], use_cache=True, **{kw: cache}).logits)
    assert len(cache.layers) == 4 and cache.get_seq_length() == 14
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-4, atol=1e-5)
    # collapsing again composes: the config remembers original indices
    info2 = collapse.collapse_model(model, [0, 2, 3])
    assert info["kept"] == [0, 2, 3, 5] and info2["kept"] == [0, 3, 5] and info2["removed"] == [2]
    assert model.config.niwt_kept_layers == [0, 3, 5]


def test_zeroed_and_skipped_modules_are_restored() -> None:
    model = testing.tiny_llama(layers=3, vocab=128)
    st = stack.decoder_stack(model)
    layers, attn = st.body.layers, model.model.layers[1].self_attn
    with sweep.applied(st, sweep.Variant("x", skip=frozenset({0}), zero_attn=frozenset({1})), None) as ran:
        assert ran == 2 and isinstance(model.model.layers[0].self_attn, stack.ZeroAttention)
    assert st.body.layers is layers and model.model.layers[1].self_attn is attn


def test_unsupported_model_is_named() -> None:
    with pytest.raises(stack.UnsupportedModelError, match=r"model\.layers"):
        stack.decoder_stack(torch.nn.Linear(2, 2))


def test_sublayer_curves_rank_the_identity_layers_blocks_first_and_lose_nothing_there(tmp_path) -> None:
    import json

    from nexus_engine.research.niwt.report import extra_blocks, render_md
    from nexus_engine.research.niwt.sublayers import sublayer_curves

    model = testing.tiny_llama_with_identity(identity=IDENTITY, layers=LAYERS)
    task = testing.tiny_lm_task()
    res = sublayer_curves(stack.decoder_stack(model), {"text": task}, {"text": task}, ks=(1, 2, 3))
    for part in ("attn", "mlp"):
        assert res["ranking"][part][0] == {"layer": IDENTITY, "select_kl": pytest.approx(0.0, abs=1e-9)}
        one, two, three = res["curves"][part]
        assert one["zeroed"] == [IDENTITY] and one["retention"]["text"] == pytest.approx(1.0, abs=1e-6)
        assert two["k"] == 2 and IDENTITY in two["zeroed"] and two["kl"]["text"] > 1e-6
        assert three["kl"]["text"] > two["kl"]["text"] > 0
        assert res["largest_k_at_target"][part]["text"] in (1, 2, 3)
    assert res["full"]["text"]["kl"] == 0.0
    # `nexus profile report` renders it beside the lab's results
    (tmp_path / "sublayers-tiny.json").write_text(json.dumps(res))
    md = render_md(extra_blocks(tmp_path, "tiny", {"text": False}), tmp_path)
    assert "| attention blocks zeroed | layers | text retention (near chance) |" in md
    assert f"| 1 | {IDENTITY} | 100.0% |" in md

