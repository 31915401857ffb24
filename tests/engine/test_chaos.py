"""The chaos harness, shortened for CI: the mixed request stream (chat, routed chat, describe, imagine with a tiny
pipeline, transcribe) while the worker is SIGKILLed twice. `nexus bench chaos` runs the long version."""

from __future__ import annotations

from pathlib import Path

from nexus_engine.bench import chaos


def test_no_request_is_lost_and_the_worker_recovers_fast(tmp_path: Path) -> None:
    r = chaos.run(requests=10, kills=2, inflight=3, gap_s=(1.5, 5.0), timeout_s=240, home=tmp_path / "chaos")
    assert r["kills"] == 2 and r["not_recovered"] == 0, r
    assert r["lost"] == 0, r
    assert r["failed_unclear"] == 0, r["unclear_examples"]
    assert r["completed"] + r["failed_clear"] == r["requests"] >= 10
    assert set(r["error_codes"]) <= {"worker_crashed"}, r["error_codes"]  # failures are the killed requests only
    assert r["recovery_ms"]["max"] <= 2000, r["recovery_ms"]
    assert r["integrity_all_ok"] and r["integrity_final"] == "ok", r["integrity_after_each_kill"]
    assert r["leaked_workers"] == []
    assert set(r["by_kind"]) == set(chaos.KINDS)  # every kind of request was in the stream
