"""The media search index: COCO images retrieved from their own captions (starter path: MiniLM over the
descriptions), `nexus search` over the history's attachments through the worker, and bad searches."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from nexus_engine.errors import BadInputError
from nexus_engine.protocol import SearchRequest
from nexus_engine.vision import service
from nexus_engine.vision.index import MediaIndex
from tests.engine.test_vision import COCO, coco_described, home, needs_coco


@needs_coco
def test_coco_images_are_found_from_their_captions(record_property: pytest.RecordProperty) -> None:
    where, engine, described, captions = coco_described()
    t = service.towers(engine)
    queries = [(c, path) for path, cs in captions.items() for c in cs]
    with home(where), engine.residency.acquire((t.embedder,)) as lease:
        vecs = lease.tower(t.embedder).embed([q for q, _ in queries])
        with MediaIndex() as idx:
            assert len(described) == 24 and idx.count(f"text:{t.embedder}") >= 24
            ranks = []
            for vec, (_, path) in zip(vecs, queries, strict=True):
                found = [h.path for h in idx.search(f"text:{t.embedder}", vec, limit=100, kind="image")]
                ranks.append(found.index(path) + 1)
    r = np.asarray(ranks)
    n = len(described)
    report = {"queries": len(r), "images": n, "recall@1": round(float((r <= 1).mean()), 3),
              "recall@5": round(float((r <= 5).mean()), 3), "mrr": round(float((1 / r).mean()), 3),
              "random": {"recall@1": round(1 / n, 3), "recall@5": round(5 / n, 3),
                         "mrr": round(float(np.mean(1 / np.arange(1, n + 1))), 3)}}
    record_property("coco_retrieval", report)
    print("\nCOCO retrieval from captions:", report)
    assert report["recall@1"] >= 0.35 and report["recall@5"] >= 0.6, report
    assert report["mrr"] >= 3 * report["random"]["mrr"], report


@needs_coco
def test_search_by_example_image_finds_itself_first() -> None:
    where, engine, _, _ = coco_described()
    ski = str(COCO / "000000136334.jpg")
    with home(where):
        stats = service.search(engine, SearchRequest(like=ski, limit=3), lambda m: None, threading.Event())
    assert stats["space"] == "image:efficientnet-lite0"
    assert stats["results"][0]["path"] == ski and stats["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


@needs_coco
def test_cli_search_indexes_the_history_attachments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from nexus_engine.cli.main import main
    from nexus_engine.history import History

    pizza, fridge, ski = (str(COCO / f) for f in ("000000160012.jpg", "000000073326.jpg", "000000136334.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\0" * 64)
    with History() as h:
        msg = h.add_message(h.create_conversation(), "user", "look")
        for p in (pizza, fridge, ski, str(broken)):
            h.add_attachment(msg, p, "image")
    assert main(["search", "a", "pizza", "on", "a", "table", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["indexed_now"] == 3 and [s["path"] for s in stats["skipped"]] == [str(broken)]
    assert sorted(r["path"] for r in stats["results"]) == sorted([pizza, fridge, ski])
    assert stats["results"][0]["path"] == pizza and stats["results"][0]["score"] > stats["results"][1]["score"]
    assert main(["search", "skiing", "down", "a", "snowy", "slope"]) == 0  # already indexed: no work, plain text
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(ski) and "shows a ski" in out


def test_empty_search_is_refused() -> None:
    from nexus_engine import paths
    from nexus_engine.config import load_models_toml
    from nexus_engine.engine import Engine

    engine = Engine(load_models_toml([paths.SHIPPED_MODELS_TOML]))
    with pytest.raises(BadInputError, match="the search is empty"):
        service.search(engine, SearchRequest(query="  "), lambda m: None, threading.Event())
    with pytest.raises(BadInputError, match="limit must be"):
        service.search(engine, SearchRequest(query="cat", limit=0), lambda m: None, threading.Event())


def test_index_skips_deleted_files_and_changed_files_are_stale(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    with MediaIndex(tmp_path / "idx.sqlite3") as idx:
        idx.put(a, "image", "a", "a", {"s": np.array([1.0, 0.0])})
        idx.put(b, "image", "b", "b", {"s": np.array([0.6, 0.8])})
        assert [h.path for h in idx.search("s", np.array([1.0, 0.0]))] == [str(a.resolve()), str(b.resolve())]
        assert idx.fresh(a, "s") and not idx.fresh(a, "other")
        a.write_bytes(b"changed")
        assert not idx.fresh(a, "s")
        b.unlink()
        assert [h.path for h in idx.search("s", np.array([0.0, 1.0]))] == [str(a.resolve())]
