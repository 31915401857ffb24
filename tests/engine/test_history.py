"""History on a real SQLite file: CRUD, cascades, schema version, reopening, threads, recovery after a crash."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nexus_engine import paths
from nexus_engine.history import SCHEMA_VERSION, History, HistoryError, auto_title, describe_file


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


def test_default_path_is_under_nexus_home(nexus_home: Path) -> None:
    with History() as h:
        h.create_conversation("x")
    assert paths.history_db().is_relative_to(nexus_home) and paths.history_db().exists()


def test_crud(db: Path) -> None:
    with History(db) as h:
        a = h.create_conversation(profile="starter")
        b = h.create_conversation("Named on purpose")
        assert h.get_conversation(a).title == "" and h.get_conversation(a).profile == "starter"

        u = h.add_message(a, "user", "How tall is Mount Everest?\nAnd K2?")
        h.add_message(a, "user", "second question does not retitle")
        r = h.add_message(a, "assistant", "", status="streaming", meta={"tower": "smollm2-chat"})
        h.update_message(r, content="8849 m", status="done", meta={"tower": "smollm2-chat", "tokens": 3})
        h.add_message(b, "user", "hello")

        assert h.get_conversation(a).title == "How tall is Mount Everest?"  # from the first user message
        assert h.get_conversation(b).title == "Named on purpose"  # an explicit title is kept
        assert [c.id for c in h.list_conversations()] == [b, a]  # most recently active first

        msgs = h.messages(a)
        assert [m.role for m in msgs] == ["user", "user", "assistant"]
        assert (msgs[2].content, msgs[2].status, msgs[2].meta) == ("8849 m", "done",
                                                                  {"tower": "smollm2-chat", "tokens": 3})
        assert msgs[2].updated >= msgs[2].created and msgs[0].id == u

        h.update_message(r, status="error", error="boom")  # fields left out stay as they were
        assert (h.get_message(r).content, h.get_message(r).error) == ("8849 m", "boom")

        h.rename(a, "Mountains")
        h.archive(b)
        assert [c.title for c in h.list_conversations()] == ["Mountains"]
        assert len(h.list_conversations(include_archived=True)) == 2

        with pytest.raises(HistoryError):
            h.add_message(a, "robot", "?")
        with pytest.raises(HistoryError):
            h.update_message(r, status="finished")
        with pytest.raises(HistoryError):
            h.add_message(12345, "user", "no such conversation")
        with pytest.raises(HistoryError):
            h.rename(12345, "x")
    with pytest.raises(HistoryError, match="closed"):
        h.messages(a)


def test_attachments_and_cascade_delete(db: Path, tmp_path: Path) -> None:
    photo = tmp_path / "cat.png"
    photo.write_bytes(b"\x89PNG fake")
    facts = describe_file(photo)
    assert facts["kind"] == "image" and facts["mime"] == "image/png" and facts["bytes"] == 9
    with History(db) as h:
        keep, gone = h.create_conversation("keep"), h.create_conversation("gone")
        m_keep = h.add_message(keep, "user", "look")
        m_gone = h.add_message(gone, "user", "look")
        h.add_attachment(m_keep, photo, **facts)
        att = h.add_attachment(m_gone, photo, **facts, meta={"width": 1})
        assert [(x.id, x.sha256, x.meta) for x in h.attachments(m_gone)] == [(att, facts["sha256"], {"width": 1})]
        with pytest.raises(HistoryError):
            h.add_attachment(m_gone, photo, kind="hologram")

        h.delete(gone)
        assert h.get_conversation(gone) is None and h.messages(gone) == [] and h.attachments(m_gone) == []
        assert len(h.attachments(m_keep)) == 1
    raw = sqlite3.connect(db)  # check the rows are really gone, not just hidden by our queries
    assert raw.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    assert raw.execute("SELECT count(*) FROM attachments").fetchone()[0] == 1
    raw.close()


def test_schema_version_and_pragmas(db: Path) -> None:
    with History(db) as h:
        assert h.schema_found == 0 and h.schema_version == SCHEMA_VERSION >= 1
        assert h._read("PRAGMA journal_mode")[0][0] == "wal"
        assert h._read("PRAGMA foreign_keys")[0][0] == 1
        assert h._read("PRAGMA busy_timeout")[0][0] >= 1000
        assert h.integrity_check() == "ok"
    with History(db) as h:
        assert h.schema_found == SCHEMA_VERSION  # nothing to migrate the second time
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(HistoryError, match="newer Nexus"):
        History(db)


def test_reopen_sees_everything(db: Path) -> None:
    h = History(db)
    c = h.create_conversation(profile="starter")
    u = h.add_message(c, "user", "Name three primary colors.")
    r = h.add_message(c, "assistant", "Red, yellow, blue.", meta={"tokens": 6})
    h.add_attachment(u, "/tmp/x.wav", "audio", mime="audio/wav", bytes=10)
    before = (h.list_conversations(), h.messages(c), h.attachments(u))
    h.close()
    with History(db) as again:
        assert (again.list_conversations(), again.messages(c), again.attachments(u)) == before
        assert again.get_message(r).meta == {"tokens": 6}


def test_two_threads_write_at_once(db: Path) -> None:
    """Both the worst case (a connection per thread) and the app's case (one History shared by threads)."""
    shared = History(db)
    c = shared.create_conversation("busy")
    errors: list[BaseException] = []

    def writer(h: History, n: int) -> None:
        try:
            for i in range(n):
                m = h.add_message(c, "assistant", "", status="streaming")
                h.update_message(m, content=f"text {i}", status="done")
        except BaseException as e:  # "database is locked" would land here
            errors.append(e)

    own = History(db)
    threads = [threading.Thread(target=writer, args=(shared, 150)), threading.Thread(target=writer, args=(own, 150)),
               threading.Thread(target=writer, args=(shared, 150))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(shared.messages(c)) == 450 and all(m.status == "done" for m in shared.messages(c))
    assert shared.integrity_check() == "ok"
    own.close()
    shared.close()


def test_recover_interrupted_only_touches_dead_owners(db: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with History(db) as h:
        c = h.create_conversation("x")
        live = h.add_message(c, "assistant", "still writing", status="streaming", meta={"owner_pid": os.getpid()})
        stale = h.add_message(c, "assistant", "half an ans", status="streaming", meta={"owner_pid": dead.pid})
        unowned = h.add_message(c, "assistant", "", status="streaming")
        assert h.recover_interrupted() == 2
        assert [h.get_message(i).status for i in (live, stale, unowned)] == ["streaming", "interrupted", "interrupted"]
        assert h.get_message(stale).content == "half an ans" and h.get_message(stale).error
        assert h.recover_interrupted() == 0


def test_auto_title() -> None:
    assert auto_title("\n  Hi there  \nmore") == "Hi there"
    long = "word " * 40
    title = auto_title(long)
    assert title.endswith("…") and len(title) <= 61 and "wor…" not in title
