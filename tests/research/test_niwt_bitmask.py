"""Bitmask JSON: round trip, schema and consistency checks on read and write, collapse from a document."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from nexus_engine import testing
from nexus_engine.research.niwt import bitmask as bm
from nexus_engine.research.niwt.collapse import collapse_model


def _doc(n: int = 6, skipped: tuple[int, ...] = (2,)) -> dict[str, Any]:
    return bm.new_bitmask(
        teacher={"tower": "tiny", "model_type": "llama", "architecture": "LlamaForCausalLM", "num_layers": n,
                 "hidden_size": 32, "revision": "sha256:0123456789abcdef"},
        task={"name": "text", "decision_metric": "ppl", "target_retention": 0.97, "dataset_hash": "ab" * 32},
        skipped=list(skipped), strategy="greedy",
        importance={"method": "sweep", "scores": {"skip_delta_nll": [0.1] * n, "block_influence": [0.2] * n}},
        subspaces=[{"layer": 0, "site": "residual", "k90": 3, "k95": 4, "k99": 6, "effective_rank": 5.5,
                    "basis": {"file": "bases/x.safetensors", "tensor": "residual.0.basis", "k": 4,
                              "sha256": "cd" * 32}},
                   {"layer": n, "site": "residual", "k90": 3, "k95": 4, "k99": 6, "effective_rank": 5.5,
                    "basis": None}],
        metrics={"full": {"text": {"ppl": 20.0}}, "collapsed": {"text": {"ppl": 20.5}},
                 "retention": {"text": 20 / 20.5, "mmlu": None}, "usable": {"text": True}, "split": "eval"},
        prov=bm.provenance(command="test", data={"eval/text": "ab" * 32}))


def test_round_trip(tmp_path: Path) -> None:
    doc = _doc()
    path = bm.save_bitmask(doc, tmp_path / "sub" / "mask.json")
    assert bm.load_bitmask(path) == json.loads(json.dumps(doc))
    assert bm.kept_layers(doc) == [0, 1, 3, 4, 5]
    assert doc["provenance"]["nexus_version"] and doc["schema"] == "nexus.niwt.bitmask" and doc["version"] == 1
    assert not list(tmp_path.glob("sub/.*tmp*"))  # atomic write leaves no temp file


def _broken(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_doc())
    change(doc)
    return doc


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("teacher"), "missing 'teacher'"),
    (lambda d: d.update(version=2), r"\$.version: must be 1"),
    (lambda d: d.update(schema="something.else"), r"\$.schema"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["teacher"].update(num_layers="6"), r"num_layers: expected integer"),
    (lambda d: d["teacher"].update(num_layers=True), r"num_layers: expected integer"),
    (lambda d: d["layers"].update(keep=[True, False, True]), "3 entries for 6 layers"),
    (lambda d: d["layers"].update(skipped=[3]), "exactly the indices where keep is false"),
    (lambda d: d["layers"].update(keep=[False] * 6, skipped=list(range(6))), "at least one layer"),
    (lambda d: d["layers"]["keep"].__setitem__(0, 1), r"keep\[0\]: expected boolean"),
    (lambda d: d["task"].update(decision_metric="vibes"), "is not one of"),
    (lambda d: d["task"].update(target_retention=1.5), "1.5 > 1"),
    (lambda d: d["task"].update(dataset_hash="not hex!"), "does not match"),
    (lambda d: d["importance"]["scores"].update(kl=[0.1, 0.2]), "2 values for 6 layers"),
    (lambda d: d["subspaces"][0].update(site="kv"), "is not one of"),
    (lambda d: d["subspaces"][0].update(layer=7), "past the last layer"),
    (lambda d: d["subspaces"][0]["basis"].pop("k"), "missing 'k'"),
    (lambda d: d["metrics"]["full"]["text"].update(ppl="20"), "expected number or null"),
])
def test_malformed_documents_are_refused_on_write_and_read(tmp_path: Path, change: Any, message: str) -> None:
    doc = _broken(change)
    with pytest.raises(bm.BitmaskError, match=message):
        bm.save_bitmask(doc, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(bm.BitmaskError, match=message):
        bm.load_bitmask(tmp_path / "bad.json")


def test_unreadable_file_is_a_bitmask_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(bm.BitmaskError, match="cannot read"):
        bm.load_bitmask(tmp_path / "x.json")
    with pytest.raises(bm.BitmaskError, match="cannot read"):
        bm.load_bitmask(tmp_path / "missing.json")


def test_schema_file_is_valid_json_schema_shape() -> None:
    schema = bm.schema()
    assert schema["$id"] == "nexus.niwt.bitmask/1" and schema["properties"]["version"]["const"] == bm.VERSION
    assert set(schema["required"]) <= set(schema["properties"])


def test_collapse_from_a_bitmask_and_layer_count_check(tmp_path: Path) -> None:
    model = testing.tiny_llama_with_identity(identity=2, layers=6)
    ids = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        info = collapse_model(model, bm.save_bitmask(_doc(), tmp_path / "m.json"))
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=1e-6)
    assert info["removed"] == [2]
    with pytest.raises(bm.BitmaskError, match=r"another model.*layers 6 \(this model: 4\)"):
        collapse_model(testing.tiny_llama(layers=4), _doc())
