"""Bad input gets a typed error a user understands: malformed or foreign bitmasks, missing or malformed data,
corrupt activation shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nexus_engine import testing
from nexus_engine.cli.main import main
from nexus_engine.errors import BadInputError, NexusError
from nexus_engine.research.niwt import bitmask as bm
from nexus_engine.research.niwt import collapse, data, record, spectral
from tests.research.test_niwt_bitmask import _doc


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------- bitmasks
@pytest.mark.parametrize(("teacher", "message"), [
    ({"num_layers": 8}, r"layers 8 \(this model: 6\)"),
    ({"hidden_size": 64}, r"hidden size 64 \(this model: 32\)"),
    ({"model_type": "qwen3"}, r"model type qwen3 \(this model: llama\)"),
])
def test_a_bitmask_for_another_model_is_refused_before_anything_changes(teacher: dict, message: str) -> None:
    model = testing.tiny_llama_with_identity(identity=2, layers=6)
    doc = _doc()
    doc["teacher"].update(teacher)
    if teacher.get("num_layers"):
        doc["layers"] = {"keep": [True] * 7 + [False], "skipped": [7], "strategy": "manual"}
        doc["importance"]["scores"] = {"s": [0.0] * 8}
    bm.validate(doc)  # the document itself is fine; it just belongs to another model
    layers = model.model.layers
    with pytest.raises(bm.BitmaskError, match=message) as e:
        collapse.collapse_model(model, doc)
    assert isinstance(e.value, BadInputError) and "another model" in e.value.message and e.value.hint
    assert model.model.layers is layers and model.config.num_hidden_layers == 6


def test_a_bitmask_for_another_revision_is_refused() -> None:
    model = testing.tiny_llama_with_identity(identity=2, layers=6)
    with pytest.raises(bm.BitmaskError, match=r"revision sha256:0123456789abcdef.*revision sha256:ffff"):
        collapse.collapse_model(model, _doc(), revision="sha256:ffff")
    assert collapse.collapse_model(model, _doc(), revision="sha256:0123456789abcdef")["removed"] == [2]
    with pytest.raises(bm.BitmaskError, match="already collapsed"):  # documents speak of original layer indices
        collapse.collapse_model(model, _doc())


def test_cli_validate_explains_a_malformed_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = _doc()
    doc["layers"]["keep"][0] = "yes"
    (tmp_path / "m.json").write_text(json.dumps(doc))
    assert main(["profile", "validate", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "$.layers.keep[0]: expected boolean, got str" in err and "hint:" in err


# -------------------------------------------------------------------------------------------- data
def test_a_data_folder_without_the_files_is_named(tmp_path: Path) -> None:
    with pytest.raises(data.DataMissingError, match=r"lacks .*gsm8k/test.jsonl and .*mmlu/test") as e:
        data.data_root(tmp_path)
    assert "omit --data" in e.value.hint
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    root = data.data_root(tmp_path)
    with pytest.raises(data.DataMissingError, match=r"line 1: not a GSM8K item .*no '####"):
        data.gsm8k_items(root, "select")
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "1+1 = 2\\n#### 2"}\n')
    with pytest.raises(data.DataMissingError, match=r"has 1 items; the eval split needs items 8..39"):
        data.gsm8k_items(root, "eval")
    assert data.gsm8k_items(root, "select", limit=1)[0].answer == "2"
    with pytest.raises(data.DataMissingError, match=r"no MMLU files"):
        data.mmlu_items(root, "eval", 3)
    (tmp_path / "mmlu" / "test" / "x_test.csv").write_text("What?,a,b,c,d,Z\n")
    with pytest.raises(data.DataMissingError, match=r"x_test.csv, row 1: expected question, 4 choices"):
        data.mmlu_items(root, "select", 1)
    (tmp_path / "mmlu" / "test" / "x_test.csv").write_text("What?,a,b,c,d,C\n")
    assert data.mmlu_items(root, "select", 1)[0].answer == 2  # letter answers (the original CSVs) work too


def test_cli_run_with_a_missing_data_folder_fails_before_loading_anything(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    assert main(["profile", "run", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "lacks" in capsys.readouterr().err and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------- activations
@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    model = testing.tiny_llama(layers=2, vocab=128)
    seqs = [list(range(i, i + 20)) for i in range(12)]
    record.record_activations(model, seqs, tmp_path / "acts", model_info={"tower": "tiny"},
                              dataset={"name": "x", "hash": "0"}, cfg=record.RecordConfig(shard_tokens=100))
    return tmp_path / "acts"


def test_an_altered_or_truncated_shard_is_refused(recorded: Path) -> None:
    shard = recorded / "shard-00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte in the data: still a readable file, but not what was recorded
    shard.write_bytes(bytes(raw))
    with pytest.raises(record.ActivationError, match=r"shard-00001.safetensors does not match its manifest"):
        spectral.analyze(recorded)
    shard.write_bytes(bytes(raw[:40]))  # truncated: not even a safetensors file any more
    with pytest.raises(record.ActivationError, match="cannot be read") as e:
        list(record.iter_activation_shards(recorded, verify=False))
    assert "nexus profile record" in e.value.hint
    shard.unlink()
    with pytest.raises(record.ActivationError, match=r"shard-00001.safetensors is missing"):
        list(record.iter_activation_shards(recorded))


def test_a_broken_manifest_is_refused(recorded: Path) -> None:
    manifest = json.loads((recorded / "manifest.json").read_text())
    with pytest.raises(record.ActivationError, match=r"no recorded mlp.0"):
        list(record.iter_activation_shards(recorded, ["mlp.0"]))
    (recorded / "manifest.json").write_text(json.dumps({**manifest, "format": "something.else"}))
    with pytest.raises(record.ActivationError, match=r"not a nexus.niwt.activations v1 manifest"):
        record.read_manifest(recorded)
    (recorded / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "shards"}))
    with pytest.raises(record.ActivationError, match="incomplete"):
        record.read_manifest(recorded)
    (recorded / "manifest.json").write_text("{")
    with pytest.raises(record.ActivationError, match="unreadable"):
        spectral.analyze(recorded)


def test_recording_refuses_layers_that_do_not_exist(tmp_path: Path) -> None:
    with pytest.raises(NexusError, match=r"layers \[5\] do not exist"):
        record.record_activations(testing.tiny_llama(layers=2), [[1, 2]], tmp_path, model_info={}, dataset={},
                                  cfg=record.RecordConfig(layers=[0, 5]))
