"""Chat history in one SQLite file: conversations, their messages and the files attached to them.

Durability: WAL journal with synchronous=NORMAL, so a committed write survives the app or the CLI being killed
at any moment (only a power cut can lose the last few commits, never corrupt the file). Streaming answers are
written while they stream, with status 'streaming'; whatever is left in that state by a process that died is
turned into 'interrupted' by `recover_interrupted()` at the next start.

Several processes may share the file (the app and `nexus chat` at once): WAL lets readers run beside the one
writer, busy_timeout makes a writer wait instead of failing, and every write transaction starts with BEGIN
IMMEDIATE, so it takes the write lock up front rather than failing with "database is locked" when it upgrades
a read lock that another writer got to first (busy_timeout does not help in that case).

The schema version is PRAGMA user_version; `MIGRATIONS[n]` turns version n into n + 1.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from nexus_engine import paths
from nexus_engine.errors import NexusError

ROLES = ("user", "assistant", "system")
STATUSES = ("done", "streaming", "cancelled", "interrupted", "error")
KINDS = ("image", "video", "audio", "file")
BUSY_TIMEOUT_MS = 10_000
TITLE_CHARS = 60

MIGRATIONS: list[str] = [
    # 0 -> 1: the first schema. `superseded_by` links an answer replaced by "regenerate" to its replacement;
    # such answers are kept (nothing the user saw is deleted) but hidden from messages() and from the prompt.
    """
    CREATE TABLE conversations (
        id       INTEGER PRIMARY KEY,
        title    TEXT NOT NULL DEFAULT '',
        profile  TEXT,
        created  REAL NOT NULL,
        updated  REAL NOT NULL,
        archived INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
        content         TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'done'
                        CHECK (status IN ('done', 'streaming', 'cancelled', 'interrupted', 'error')),
        error           TEXT,
        created         REAL NOT NULL,
        updated         REAL NOT NULL,
        meta            TEXT NOT NULL DEFAULT '{}',
        superseded_by   INTEGER REFERENCES messages(id) ON DELETE SET NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX messages_by_status ON messages(status);
    CREATE TABLE attachments (
        id         INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        path       TEXT NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('image', 'video', 'audio', 'file')),
        mime       TEXT,
        bytes      INTEGER,
        sha256     TEXT,
        meta       TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX attachments_by_message ON attachments(message_id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryError(NexusError):
    code = "history_error"


@dataclass
class Conversation:
    id: int
    title: str
    profile: str | None
    created: float
    updated: float
    archived: bool


@dataclass
class StoredMessage:
    id: int
    conversation_id: int
    role: str
    content: str
    status: str
    error: str | None
    created: float
    updated: float
    meta: dict[str, Any] = field(default_factory=dict)
    superseded_by: int | None = None


@dataclass
class Attachment:
    id: int
    message_id: int
    path: str
    kind: str
    mime: str | None
    bytes: int | None
    sha256: str | None
    meta: dict[str, Any] = field(default_factory=dict)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; returns the version found. Safe when two processes race here."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise HistoryError(f"the chat history was written by a newer Nexus (schema {found}, this one knows "
                           f"{SCHEMA_VERSION})", "update Nexus, or point NEXUS_HOME at another folder")
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # read again under the write lock: another process may have migrated meanwhile
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                conn.execute("COMMIT")
                return found
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")  # transactional, rolled back with the rest
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def auto_title(text: str) -> str:
    """A conversation title from its first user message: the first line, cut at a word near TITLE_CHARS."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS].rsplit(" ", 1)[0] or line[:TITLE_CHARS]
    return cut.rstrip(" ,.;:") + "…"


def describe_file(path: str | Path) -> dict[str, Any]:
    """kind, mime, bytes and sha256 of a file, for add_attachment (reads the whole file: call off the UI thread)."""
    p = Path(path)
    mime = mimetypes.guess_type(p.name)[0]
    major = (mime or "").split("/")[0]
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"kind": major if major in KINDS else "file", "mime": mime, "bytes": p.stat().st_size,
            "sha256": digest.hexdigest()}


class History:
    """The chat history. Thread-safe; one instance per process is enough.

    One connection guarded by a lock, rather than one connection per thread: SQLite runs one writer at a time
    anyway and our writes are tiny (a streamed answer is flushed at most ~4 times a second), so the lock costs
    nothing, while per-thread connections would make the UI thread and the client's reader thread contend for
    the file lock through busy_timeout, see each other's commits only at transaction boundaries, and leave
    connections behind in threads that have ended (close() could not reach them).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else paths.history_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (the sqlite3 module's implicit transactions
        # would start them deferred, see the module docstring)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise HistoryError(f"could not switch {self.path} to WAL mode (got {mode!r})",
                                   "keep the history on a local disk, not a network share")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self.schema_found = migrate(conn)
        except BaseException:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        self._conn: sqlite3.Connection | None = conn

    # ---------------------------------------------------------------------------------- plumbing
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._connection().execute(sql, args).fetchall()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise HistoryError("the chat history is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    def integrity_check(self) -> str:
        """'ok', or SQLite's list of problems, one per line."""
        return "\n".join(str(r[0]) for r in self._read("PRAGMA integrity_check"))

    # ----------------------------------------------------------------------------- conversations
    def create_conversation(self, title: str = "", profile: str | None = None) -> int:
        now = time.time()
        with self._write() as conn:
            cur = conn.execute("INSERT INTO conversations (title, profile, created, updated) VALUES (?, ?, ?, ?)",
                               (title, profile, now, now))
        return int(cur.lastrowid or 0)

    def list_conversations(self, include_archived: bool = False) -> list[Conversation]:
        """Most recently active first."""
        where = "" if include_archived else "WHERE archived = 0"
        rows = self._read(f"SELECT * FROM conversations {where} ORDER BY updated DESC, id DESC")
        return [_conversation(r) for r in rows]

    def get_conversation(self, conversation_id: int) -> Conversation | None:
        rows = self._read("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return _conversation(rows[0]) if rows else None

    def rename(self, conversation_id: int, title: str) -> None:
        self._update_conversation(conversation_id, "title = ?", (title,))

    def archive(self, conversation_id: int, archived: bool = True) -> None:
        self._update_conversation(conversation_id, "archived = ?", (int(archived),))

    def _update_conversation(self, conversation_id: int, assignment: str, args: tuple[Any, ...]) -> None:
        with self._write() as conn:
            cur = conn.execute(f"UPDATE conversations SET {assignment}, updated = ? WHERE id = ?",
                               (*args, time.time(), conversation_id))
        if cur.rowcount == 0:
            raise HistoryError(f"no conversation {conversation_id}")

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation with its messages and attachment records (not the attached files)."""
        with self._write() as conn:
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # ---------------------------------------------------------------------------------- messages
    def add_message(self, conversation_id: int, role: str, content: str = "", status: str = "done",
                    meta: dict[str, Any] | None = None, error: str | None = None) -> int:
        """Append a message; the first user message of an untitled conversation becomes its title."""
        _check(role, ROLES, "role")
        _check(status, STATUSES, "status")
        now = time.time()
        with self._write() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO messages (conversation_id, role, content, status, error, created, updated, meta) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (conversation_id, role, content, status, error, now, now, json.dumps(meta or {})))
            except sqlite3.IntegrityError as e:
                raise HistoryError(f"no conversation {conversation_id}") from e
            conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            if role == "user":
                conn.execute("UPDATE conversations SET title = ? WHERE id = ? AND title = ''",
                             (auto_title(content), conversation_id))
        return int(cur.lastrowid or 0)

    def update_message(self, message_id: int, content: str | None = None, status: str | None = None,
                       meta: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Change the given fields; None leaves a field as it is. `meta` replaces the stored meta."""
        sets, args = ["updated = ?"], [time.time()]
        if content is not None:
            sets.append("content = ?")
            args.append(content)
        if status is not None:
            _check(status, STATUSES, "status")
            sets.append("status = ?")
            args.append(status)
        if meta is not None:
            sets.append("meta = ?")
            args.append(json.dumps(meta))
        if error is not None:
            sets.append("error = ?")
            args.append(error)
        with self._write() as conn:
            cur = conn.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", (*args, message_id))
        if cur.rowcount == 0:
            raise HistoryError(f"no message {message_id}")

    def supersede(self, message_ids: list[int], by: int) -> None:
        """Hide answers replaced by a regenerated one (kept in the file, see messages(include_superseded))."""
        with self._write() as conn:
            conn.executemany("UPDATE messages SET superseded_by = ? WHERE id = ?", [(by, i) for i in message_ids])

    def messages(self, conversation_id: int, include_superseded: bool = False) -> list[StoredMessage]:
        """The conversation's messages, oldest first."""
        hide = "" if include_superseded else "AND superseded_by IS NULL"
        rows = self._read(f"SELECT * FROM messages WHERE conversation_id = ? {hide} ORDER BY id", (conversation_id,))
        return [_message(r) for r in rows]

    def get_message(self, message_id: int) -> StoredMessage | None:
        rows = self._read("SELECT * FROM messages WHERE id = ?", (message_id,))
        return _message(rows[0]) if rows else None

    def recover_interrupted(self) -> int:
        """Mark 'streaming' messages whose owner process is gone as 'interrupted'; returns how many.

        A streaming message records its writer's pid in meta['owner_pid'], so the app starting while
        `nexus chat` streams into the same file leaves that live answer alone.
        """
        rows = self._read("SELECT id, meta FROM messages WHERE status = 'streaming'")
        stale = [r["id"] for r in rows if not _owner_alive(json.loads(r["meta"] or "{}").get("owner_pid"))]
        with self._write() as conn:
            conn.executemany(
                "UPDATE messages SET status = 'interrupted', updated = ?, "
                "error = coalesce(error, 'Nexus was closed while this answer was being written') "
                "WHERE id = ? AND status = 'streaming'", [(time.time(), i) for i in stale])
        return len(stale)

    # ------------------------------------------------------------------------------- attachments
    def add_attachment(self, message_id: int, path: str | Path, kind: str, mime: str | None = None,
                       bytes: int | None = None, sha256: str | None = None,
                       meta: dict[str, Any] | None = None) -> int:
        _check(kind, KINDS, "attachment kind")
        with self._write() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO attachments (message_id, path, kind, mime, bytes, sha256, meta) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (message_id, str(path), kind, mime, bytes, sha256, json.dumps(meta or {})))
            except sqlite3.IntegrityError as e:
                raise HistoryError(f"no message {message_id}") from e
        return int(cur.lastrowid or 0)

    def attachments(self, message_id: int) -> list[Attachment]:
        rows = self._read("SELECT * FROM attachments WHERE message_id = ? ORDER BY id", (message_id,))
        return [Attachment(**{**dict(r), "meta": json.loads(r["meta"] or "{}")}) for r in rows]


# ------------------------------------------------------------------------------------------ helpers
def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise HistoryError(f"unknown {what} {value!r}", f"use one of: {', '.join(allowed)}")


def _owner_alive(pid: Any) -> bool:
    # psutil rather than os.kill(pid, 0): on Windows os.kill terminates the process
    return isinstance(pid, int) and pid != 0 and psutil.pid_exists(pid) and _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _conversation(r: sqlite3.Row) -> Conversation:
    return Conversation(id=r["id"], title=r["title"], profile=r["profile"], created=r["created"],
                        updated=r["updated"], archived=bool(r["archived"]))


def _message(r: sqlite3.Row) -> StoredMessage:
    return StoredMessage(**{**dict(r), "meta": json.loads(r["meta"] or "{}")})
