"""`nexus transcribe` and `nexus bench voice` as a user runs them: real subprocesses, real worker, real models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nexus_engine.voice.wer import wer
from tests.voice.conftest import clips

NEXUS = [sys.executable, "-m", "nexus_engine.cli.main"]


def nexus(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NEXUS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def test_transcribe_prints_text_json_and_timestamps(shared_cache: Path) -> None:
    env = {"NEXUS_CACHE": str(shared_cache)}
    _, path, ref = clips()[0]
    proc = nexus("transcribe", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert wer(ref, proc.stdout) <= 0.15
    proc = nexus("transcribe", "--json", "--long", str(path), env=env)
    out = json.loads(proc.stdout)
    assert out["finish"] == "done" and out["duration_s"] > 10 and out["segments"][0]["start"] == 0.0
    assert wer(ref, out["text"]) <= 0.15
    proc = nexus("transcribe", "/no/such/file.wav", env=env)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_voice_writes_the_latency_breakdown(shared_cache: Path, tmp_path: Path) -> None:
    one = tmp_path / "clips"
    one.mkdir()
    key, path, ref = clips()[1]  # the short clip, once: the benchmark's shape, not its numbers
    shutil.copy(path, one / path.name)
    (one / "x.trans.txt").write_text(f"{key} {ref}\n")
    out = tmp_path / "voice.json"
    proc = nexus("bench", "voice", "--rounds", "1", "--clips", str(one), "--out", str(out),
                 env={"NEXUS_CACHE": str(shared_cache)}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    stages = ("vad_eot_ms", "asr_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "total_ms")
    assert set(stages) <= set(result["summary"]) and result["turns"][0]["status"] == "done"
    assert all(result["summary"][s]["median"] is not None for s in stages)
    assert result["wer"] <= 0.15 and result["goal_total_ms"] in (300.0, 800.0)
