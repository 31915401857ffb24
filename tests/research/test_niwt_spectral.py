"""Activation recording (shards, manifest, bounded memory) and spectral analysis with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nexus_engine import testing
from nexus_engine.research.niwt import record, spectral, stack


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_spectrum_recovers_a_known_rank(rank: int) -> None:
    x = testing.low_rank_activations(n=800, dim=48, rank=rank, seed=rank)
    s = spectral.spectrum(torch.cov(x.T.double()))
    assert s["numerical_rank"] == rank
    assert s["k90"] <= s["k95"] <= s["k99"] <= rank
    assert 1 <= s["effective_rank"] <= rank + 1e-6
    assert s["explained_variance"][rank - 1] == pytest.approx(1.0, abs=1e-9)


def test_spectrum_of_isotropic_noise_needs_most_directions() -> None:
    x = torch.randn(4000, 32, generator=torch.Generator().manual_seed(0))
    s = spectral.spectrum(torch.cov(x.T.double()))
    assert s["numerical_rank"] == 32 and s["k90"] >= 25 and s["effective_rank"] > 30


def _low_rank_embedding_model(rank: int) -> torch.nn.Module:
    model = testing.tiny_llama(hidden=32, layers=3, vocab=128, seed=0)
    with torch.no_grad():  # rank-`rank` embeddings: the residual stream entering layer 0 has exactly that rank
        model.model.embed_tokens.weight.copy_(testing.low_rank_activations(n=128, dim=32, rank=rank, seed=1))
    return model


def test_recording_streams_shards_and_the_spectrum_recovers_the_rank(tmp_path: Path) -> None:
    rank = 6
    model = _low_rank_embedding_model(rank)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 128, (int(n),), generator=g).tolist() for n in torch.randint(5, 40, (30,), generator=g)]
    manifest = record.record_activations(model, seqs, tmp_path, model_info={"tower": "tiny", "revision": "r1"},
                                         dataset={"name": "random", "hash": "abc"},
                                         cfg=record.RecordConfig(sites=("residual", "mlp", "attn"), shard_tokens=200,
                                                                 dtype="float32", batch=4))
    total = sum(len(s) for s in seqs)
    assert manifest["tokens"] == total  # padding is never recorded
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["model"]["num_layers"] == 3 and manifest["dataset"]["examples"] == 30
    assert manifest["sites"] == {"residual": [0, 1, 2, 3], "mlp": [0, 1, 2], "attn": [0, 1, 2]}
    assert len(manifest["shards"]) >= total // 230  # flushed every ~200 tokens: memory stays bounded
    assert all(s["tokens"] < 200 + 4 * 40 for s in manifest["shards"])
    shards = list(record.iter_activation_shards(tmp_path, ["residual.0", "mlp.1"]))
    assert set(shards[0]) == {"residual.0", "mlp.1", "tokens", "example", "position"}
    rows = torch.cat([s["residual.0"] for s in shards])
    toks = torch.cat([s["tokens"] for s in shards])
    torch.testing.assert_close(rows, model.model.embed_tokens.weight[toks].detach())  # residual.0 = embeddings
    assert torch.cat([s["mlp.1"] for s in shards]).shape == (total, 64)  # intermediate size
    ex, pos = torch.cat([s["example"] for s in shards]), torch.cat([s["position"] for s in shards])
    assert int(toks[(ex == 3) & (pos == 2)]) == seqs[3][2]
    # the last residual site is the input of the final norm
    st = stack.decoder_stack(model)
    hs, _ = stack.layer_inputs(st, torch.tensor([seqs[0]]), None)
    last = next(record.iter_activation_shards(tmp_path, ["residual.3"]))["residual.3"][:len(seqs[0])]
    torch.testing.assert_close(last, hs[3][0], rtol=1e-5, atol=1e-5)

    result = spectral.analyze(tmp_path)
    layer0 = result["sites"]["residual"]["layers"][0]
    assert layer0["numerical_rank"] == rank and layer0["k99"] <= rank
    assert result["sites"]["residual"]["layers"][1]["numerical_rank"] > rank  # layers add directions
    cons = result["sites"]["residual"]["consecutive"]
    assert cons["pairs"][0] == [0, 1] and all(0 < c <= 1 + 1e-9 for c in cons["linear_cka"])
    bases = spectral.principal_bases(tmp_path, "residual", "k99")
    b0 = bases["residual.0.basis"].float()
    assert b0.shape[0] <= rank and b0.shape[1] == 32
    torch.testing.assert_close(b0 @ b0.T, torch.eye(b0.shape[0]), atol=5e-3, rtol=0)  # orthonormal rows


def test_identity_layer_has_cka_one_and_no_angle(tmp_path: Path) -> None:
    model = testing.tiny_llama_with_identity(identity=1, layers=3)
    seqs = [list(range(i, i + 12)) for i in range(10)]
    record.record_activations(model, seqs, tmp_path, model_info={}, dataset={"name": "x", "hash": "0"},
                              cfg=record.RecordConfig(dtype="float32"))
    cons = spectral.analyze(tmp_path)["sites"]["residual"]["consecutive"]
    assert cons["linear_cka"][1] == pytest.approx(1.0, abs=1e-6)
    assert cons["angular_distance"][1] == pytest.approx(0.0, abs=1e-4)
    assert cons["linear_cka"][0] < 0.999


def test_unknown_site_and_missing_manifest_are_refused(tmp_path: Path) -> None:
    from nexus_engine.errors import NexusError

    model = testing.tiny_llama(layers=1)
    with pytest.raises(NexusError, match="unknown activation sites"):
        record.record_activations(model, [[1, 2]], tmp_path, model_info={}, dataset={},
                                  cfg=record.RecordConfig(sites=("kv",)))
    with pytest.raises(NexusError, match="manifest"):
        list(record.iter_activation_shards(tmp_path / "nothing"))


def test_min_position_leaves_out_an_attention_sink(tmp_path: Path) -> None:
    """A first token with a huge residual norm (as in real LMs) owns the top component unless it is left out."""
    model = _low_rank_embedding_model(rank=6)

    def sink(_m: torch.nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, 0] *= 300.0
        return out

    model.model.embed_tokens.register_forward_hook(sink)
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 128, (24,), generator=g).tolist() for _ in range(20)]
    record.record_activations(model, seqs, tmp_path, model_info={}, dataset={"name": "x", "hash": "0"},
                              cfg=record.RecordConfig(layers=[0], dtype="float32"))
    every = spectral.analyze(tmp_path)["sites"]["residual"]["layers"][0]
    rest = spectral.analyze(tmp_path, min_position=1)
    layer0 = rest["sites"]["residual"]["layers"][0]
    assert every["tokens"] == 20 * 24 and layer0["tokens"] == 20 * 23 and rest["min_position"] == 1
    assert every["explained_variance"][0] > 0.5 > layer0["explained_variance"][0]
    assert layer0["numerical_rank"] == 6
    basis = spectral.principal_bases(tmp_path, "residual", "k99", min_position=1)["residual.0.basis"]
    assert basis.shape[0] <= 6
