"""Durability: a power cut, simulated by SIGKILLing the client process and its worker at the same instant while an
answer streams into the history, leaves a consistent SQLite file; multi-row writes are all-or-nothing; generated
files and other atomic writes are the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from nexus_engine import atomic, generation, paths
from nexus_engine.history import History
from nexus_engine.protocol import GenerateRequest

OWNER = textwrap.dedent("""
    import sys, threading, time
    from nexus_engine.chat_session import ChatSession
    from nexus_engine.client import EngineClient
    from nexus_engine.history import History

    history = History(sys.argv[1])
    client = EngineClient()
    client.start()
    print(client.worker_pid, flush=True)

    def notes():  # a second writer: small transactions as fast as they go
        cid = history.create_conversation("notes")
        while True:
            mid = history.add_message(cid, "user", "note " * 20)
            history.add_attachment(mid, "/tmp/x.png", "image", bytes=1)
            time.sleep(0.005)

    threading.Thread(target=notes, daemon=True).start()
    while True:
        ChatSession(client, history).send(sys.argv[2], max_tokens=300, seed=1, role="reasoning").wait(300)
""")


def _streaming_text(db: Path) -> int:
    with History(db) as h:
        rows = h._read("SELECT length(content) FROM messages WHERE status = 'streaming' AND role = 'assistant'")
    return max((r[0] for r in rows), default=0)


def _check(db: Path) -> dict[str, int]:
    with History(db) as h:
        assert h.integrity_check() == "ok"
        assert h._read("PRAGMA foreign_key_check") == []
        statuses = {r[0]: r[1] for r in h._read("SELECT status, count(*) FROM messages GROUP BY status")}
        interrupted = h.recover_interrupted()  # the owner is dead: its streaming answers become interrupted
        assert h._read("SELECT count(*) FROM messages WHERE status = 'streaming'")[0][0] == 0
        orphans = h._read("SELECT count(*) FROM attachments a LEFT JOIN messages m ON m.id = a.message_id "
                          "WHERE m.id IS NULL")[0][0]
        assert orphans == 0
        h.add_message(h.create_conversation(), "user", "still writable")  # the file is usable afterwards
    return {**statuses, "recovered": interrupted}


def test_power_cut_of_client_and_worker_mid_write_leaves_a_consistent_db(tmp_path: Path) -> None:
    paths.user_models_toml().write_text("[towers.smollm2-chat.options]\nn_threads = 1\n")
    db = tmp_path / "history.sqlite3"
    History(db).close()
    rounds = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", OWNER, str(db), "Write a long story about a lighthouse."],
                                stdout=subprocess.PIPE, text=True)
        worker = int(proc.stdout.readline())
        try:
            deadline = time.monotonic() + 90
            while _streaming_text(db) < 40 and time.monotonic() < deadline:  # an answer is being flushed
                time.sleep(0.05)
            time.sleep(random.uniform(0, 0.3))
            for pid in (proc.pid, worker):  # the "power cut": both at once, no chance to clean up
                os.kill(pid, signal.SIGKILL)
            proc.wait(10)
            psutil.Process(worker).wait(10) if psutil.pid_exists(worker) else None
        finally:
            proc.kill()
            proc.wait()
        rounds.append(_check(db))
    assert all(r["recovered"] >= 1 for r in rounds), rounds
    with History(db) as h:
        answers = h._read("SELECT content FROM messages WHERE status = 'interrupted' AND role = 'assistant'")
        assert sum(bool(r[0].strip()) for r in answers) >= 3  # the partial text that was flushed is kept


MULTI_ROW = textwrap.dedent("""
    import sys
    from nexus_engine.history import History

    h = History(sys.argv[1])
    cid = h.create_conversation("batches")
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        with h._write() as conn:  # one transaction, three rows
            for i in range(3):
                conn.execute("INSERT INTO messages (conversation_id, role, content, created, updated, meta) "
                             "VALUES (?, 'user', ?, 0, 0, ?)", (cid, "x" * 2000, '{"batch": %d}' % n))
""")


def test_multi_row_writes_are_all_or_nothing_under_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "batches.sqlite3"
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", MULTI_ROW, str(db)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(random.uniform(0.2, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with History(db) as h:
            assert h.integrity_check() == "ok"
            sizes = h._read("SELECT json_extract(meta, '$.batch') AS b, count(*) FROM messages GROUP BY "
                            "conversation_id, b")
            assert sizes and all(n == 3 for _, n in sizes), [tuple(r) for r in sizes if r[1] != 3]


WRITER = textwrap.dedent("""
    import sys
    from nexus_engine import atomic

    print("ready", flush=True)
    i = 0
    while True:
        atomic.write_bytes(sys.argv[1], (b"a" if i % 2 else b"b") * 3_000_000)
        i += 1
""")


def test_atomic_writes_are_old_or_new_under_sigkill(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "out.bin"
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        data = target.read_bytes()
        assert len(data) == 3_000_000 and data in (b"a" * 3_000_000, b"b" * 3_000_000)
    atomic.sweep(folder)  # what a killed writer left behind (its pid is gone)
    assert [p.name for p in folder.iterdir()] == ["out.bin"]


def test_generated_files_are_written_atomically(tmp_path: Path) -> None:
    from PIL import Image

    folder = generation.output_dir()
    dead = (folder / ".x.png.999999999.abcdef.part")  # a pid that cannot exist: a killed worker's leftover
    dead.write_bytes(b"half")
    atomic.sweep(folder)
    assert not dead.exists()
    req = GenerateRequest(prompt="a red cube", seed=3, steps=2, width=32, height=32)
    png = generation.save_png(Image.new("RGB", (32, 32), "red"), folder / "cube.png", req, "tiny")
    with Image.open(png) as im:
        assert im.size == (32, 32) and im.text["prompt"] == "a red cube" and im.text["seed"] == "3"
    mp4 = generation.save_mp4([Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")], folder / "c.mp4")
    assert mp4.stat().st_size > 0
    assert sorted(p.name for p in folder.iterdir()) == ["c.mp4", "cube.png"]  # no temporary files left


def test_rewrites_replace_the_file_whole(tmp_path: Path) -> None:
    name = "settings.json"
    path = tmp_path / "s" / name
    path.parent.mkdir()
    atomic.write_text(path, '{"a": 1}')
    atomic.write_text(path, '{"a": 2}')
    assert path.read_text() == '{"a": 2}' and [p.name for p in path.parent.iterdir()] == [name]
