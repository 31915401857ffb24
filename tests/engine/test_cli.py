"""The `nexus` command as a user runs it: real subprocesses, real worker, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nexus_engine import paths
from nexus_engine.history import History

NEXUS = [sys.executable, "-m", "nexus_engine.cli.main"]


def nexus(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*NEXUS, *args], capture_output=True, text=True, timeout=timeout, **kw)


def test_chat_one_shot_streams_a_sensible_answer_and_saves_it() -> None:
    proc = nexus("chat", "Name three primary colors.", "--temperature", "0", "--stats")
    assert proc.returncode == 0, proc.stderr
    assert sum(c in proc.stdout.lower() for c in ("red", "blue", "yellow")) >= 2, proc.stdout
    assert "tok/s" in proc.stderr
    with History() as h:
        (conv,) = h.list_conversations()
        msgs = h.messages(conv.id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[1].status == "done" and msgs[1].content.strip() in proc.stdout


def test_repl_ctrl_c_stops_the_answer_and_keeps_the_conversation() -> None:
    # its own process group, so the signal reaches the CLI and its worker the way a terminal's Ctrl-C does
    proc = subprocess.Popen([*NEXUS, "chat", "--max-tokens", "400"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write("Write a very long story about a dragon who learns to paint.\n")
    proc.stdin.flush()
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 60
    while len("".join(chunks)) < 40 and time.time() < deadline:  # wait until the answer is streaming
        time.sleep(0.05)
    assert len("".join(chunks)) >= 40, "no streamed answer"
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    proc.stdin.write("/quit\n")
    proc.stdin.flush()
    err = proc.stderr.read()
    proc.wait(60)
    reader.join(10)
    got = "".join(chunks)
    assert proc.returncode == 0, err
    assert "stopped" in err and "partial answer is saved" in err
    assert "conversation 1 is saved" in err
    with History() as h:
        msgs = h.messages(1)
    assert msgs[0].content.startswith("Write a very long story")
    assert msgs[1].status == "cancelled" and len(msgs[1].content) > 0 and msgs[1].content in got


def test_towers_lists_installed_and_missing() -> None:
    proc = nexus("towers", "--json")
    rows = json.loads(proc.stdout)
    by_name = {r["name"]: r for r in rows if r["name"]}
    assert by_name["smollm2-chat"]["installed"] and "reasoning" in by_name["smollm2-chat"]["roles"]
    assert rows[-1]["not_installed_roles"] == ["imagination", "video"]
    seed = json.loads(nexus("--profile", "seed-16gb", "towers", "--json").stdout)
    assert len([r for r in seed if r["name"]]) == 12
    assert not any(r["installed"] for r in seed if r["name"])  # no hub, no downloads: honest "missing"


def test_doctor_reports_and_names_fixes() -> None:
    proc = nexus("doctor", "--no-worker")
    assert "[ok  ] tower smollm2-chat" in proc.stdout
    paths.user_models_toml().write_text("[towers.x]\nkind = 'llm'\n")
    bad = nexus("doctor", "--no-worker")
    assert bad.returncode == 1 and "[FAIL] models.toml" in bad.stdout and "missing 'source'" in bad.stdout


def test_bad_models_toml_is_a_message_not_a_traceback() -> None:
    Path(paths.user_models_toml()).write_text('[towers.smollm2-chat]\nquantization = "nf4"\n')
    proc = nexus("chat", "hi")
    assert proc.returncode == 2
    assert "quantization 'nf4' is not valid" in proc.stderr and "Traceback" not in proc.stderr


def test_chat_attach_hears_a_voice_note_and_keeps_a_copy_with_the_message(tmp_path: Path) -> None:
    clips = sorted(Path(os.environ.get("NEXUS_LIBRISPEECH", "/work/shared/data/librispeech")).glob("*.flac"))
    if not clips:
        import pytest

        pytest.skip("no LibriSpeech clips")
    note = tmp_path / "note.flac"
    note.write_bytes(clips[0].read_bytes())
    proc = nexus("chat", "What did the speaker say?", "--attach", str(note), "--max-tokens", "8", "--temperature",
                 "0", "--stats", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[heard note.flac (whisper-base): \u201c" in proc.stderr, proc.stderr
    note.unlink()  # the conversation keeps its own copy
    with History() as h:
        (conv,) = h.list_conversations()
        user = h.messages(conv.id)[0]
        (att,) = h.attachments(user.id)
    assert att.kind == "audio" and Path(att.path).parent == paths.data_dir() / "attachments"
    assert Path(att.path).read_bytes() == clips[0].read_bytes()


def test_chat_attach_refuses_a_bad_file_before_storing_anything(tmp_path: Path) -> None:
    for bad, why in ((tmp_path / "gone.wav", "does not exist"), (tmp_path / "notes.txt", "unsupported file type")):
        if bad.suffix == ".txt":
            bad.write_text("hello")
        proc = nexus("chat", "what is this?", "--attach", str(bad))
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr
    with History() as h:
        assert h.list_conversations() == []
