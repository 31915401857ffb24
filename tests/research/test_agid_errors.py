"""Bad input to AGID is a clear, typed error: a bitmask or recording from other weights, damaged activation
shards, an adapter manifest written for another tower, a damaged adapter file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nexus_engine import testing
from nexus_engine.config.schema import Source, TowerSpec
from nexus_engine.consolidation import adapters
from nexus_engine.research.agid import mask, shards
from nexus_engine.research.agid.errors import (
    AdapterFormatError,
    AdapterMismatchError,
    CorruptShardError,
    RevisionMismatchError,
)
from nexus_engine.research.agid.teacher import Teacher, teacher_info
from nexus_engine.research.niwt import bitmask as bm
from nexus_engine.research.niwt import save_bitmask

REV = "sha256:00000000aaaaaaaa"


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _teacher(revision: str = REV) -> Teacher:
    model = testing.tiny_llama(layers=4, vocab=64)
    spec = TowerSpec(name="tiny-lm", kind="llm", backend="transformers", capabilities=(), source=Source(path="/x"),
                     quantization="fp32")
    return Teacher(model, None, spec, revision)


def _bitmask(tmp: Path, teacher: Teacher, tower: str | None = None) -> Path:
    info = {**teacher.info, "tower": tower or teacher.info["tower"]}
    doc = bm.new_bitmask(teacher=info, task={"name": "text", "decision_metric": "ppl", "target_retention": 0.97,
                                             "dataset_hash": "random-0"},
                         skipped=[2], importance={"method": "test", "scores": {}},
                         metrics={"full": {}, "collapsed": {}, "retention": {}}, prov=bm.provenance())
    return save_bitmask(doc, tmp / "bitmask.json")


def test_bitmask_from_other_weights_or_tower_is_refused(tmp_path: Path) -> None:
    path = _bitmask(tmp_path, _teacher())
    assert mask.load_checked(path, _teacher())["layers"]["skipped"] == [2]
    with pytest.raises(RevisionMismatchError, match="revision"):
        mask.load_checked(path, _teacher("sha256:ffffffffffffffff"))
    with pytest.raises(RevisionMismatchError, match="tower"):
        mask.load_checked(_bitmask(tmp_path, _teacher(), tower="other-lm"), _teacher())


@pytest.fixture
def recording(tmp_path: Path) -> tuple[Path, Teacher, torch.Tensor]:
    teacher = _teacher()
    ids = torch.randint(0, 64, (6, 8), generator=torch.Generator().manual_seed(0))
    folder = tmp_path / "acts"
    shards.record(teacher.model, ids, folder, info=teacher.info, dataset={"name": "t", "hash": "abc"}, layers=[0, 2, 4],
                  shard_tokens=16)
    return folder, teacher, ids


def test_recording_round_trip(recording: tuple[Path, Teacher, torch.Tensor]) -> None:
    folder, teacher, ids = recording
    manifest = shards.verify(folder, teacher.info, "abc")
    assert len(manifest["shards"]) == 2  # 4 windows of 8 rows per batch, flushed past 16 rows
    got, acts = shards.load_windows(folder, [0, 2, 4], 8)
    assert torch.equal(got, ids) and acts[4].shape == (6, 8, 32)


def test_damaged_shards_are_refused(recording: tuple[Path, Teacher, torch.Tensor]) -> None:
    folder, teacher, _ = recording
    shard = folder / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a tensor: still parses, wrong numbers
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match="sha256"):
        shards.verify(folder, teacher.info)
    shard.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(CorruptShardError):
        shards.verify(folder, teacher.info)
    shard.unlink()
    with pytest.raises(CorruptShardError, match="missing"):
        shards.verify(folder, teacher.info)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptShardError, match="manifest"):
        shards.verify(folder)


def test_recording_from_other_weights_or_data_is_refused(recording: tuple[Path, Teacher, torch.Tensor]) -> None:
    folder, teacher, _ = recording
    with pytest.raises(RevisionMismatchError):
        shards.verify(folder, _teacher("sha256:ffffffffffffffff").info)
    with pytest.raises(CorruptShardError, match="other data"):
        shards.verify(folder, teacher.info, dataset_hash="def")
    with pytest.raises(CorruptShardError, match=r"residual\.3"):
        shards.load_windows(folder, [3], 8)  # a layer that was never recorded


def _adapter(root: Path, tower: str = "tiny-lm", kind: str = "text_bridges") -> Path:
    folder = adapters.adapter_dir(tower, kind, root)
    adapters.write_adapter(folder, {"w": torch.ones(3)}, {
        "kind": kind, "tower": tower, "teacher": teacher_info(_teacher().model, "tiny-lm", REV), "config": {},
        "data": {"train": "abc"}, "metrics": {}, "training": {}})
    return folder


def test_manifest_for_another_tower_or_kind_is_refused(tmp_path: Path) -> None:
    folder = _adapter(tmp_path)
    assert adapters.read_manifest(folder, tower="tiny-lm", kind="text_bridges")["teacher"]["revision"] == REV
    with pytest.raises(AdapterMismatchError, match=r"for tower 'tiny-lm', not 'smollm2-hf'"):
        adapters.read_manifest(folder, tower="smollm2-hf")
    with pytest.raises(AdapterMismatchError, match="vision_projector"):
        adapters.read_manifest(folder, kind="vision_projector")
    from nexus_engine.consolidation.student import apply_text_adapter

    with pytest.raises(AdapterMismatchError):
        apply_text_adapter(testing.tiny_llama(layers=4, vocab=64), folder, "other-lm", REV)


def test_damaged_adapters_are_refused(tmp_path: Path) -> None:
    folder = _adapter(tmp_path)
    manifest = adapters.read_manifest(folder)
    assert torch.equal(adapters.load_tensors(folder, manifest)["w"], torch.ones(3))
    (folder / adapters.ADAPTER_FILE).write_bytes(b"not safetensors")
    with pytest.raises(AdapterFormatError, match="sha256"):
        adapters.load_tensors(folder, manifest)
    doc = json.loads((folder / adapters.MANIFEST).read_text())
    del doc["teacher"]
    doc["version"] = 9
    (folder / adapters.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(AdapterFormatError) as err:
        adapters.read_manifest(folder)
    assert "missing 'teacher'" in err.value.message
    assert adapters.installed(tmp_path) == []  # a damaged folder is not offered to the engine
