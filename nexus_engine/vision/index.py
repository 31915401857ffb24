"""The local media index: every image and video the user has attached, embedded for search.

One SQLite file next to the chat history (`<data>/media_index.sqlite3`, WAL like the history). A row per file
(keyed by its absolute path; size and mtime tell when it changed) with its description and the text the starter
path embeds, and one vector per *space* — vectors from different models are never compared:

  text:<embedder>   MiniLM of the index text (words + categories + OCR): queried with MiniLM of the query text
  image:<tower>     EfficientNet-Lite0 pooled features: "images like this one"
  siglip:<tower>    SigLIP2 image embeddings (seed path): queried with SigLIP2 text embeddings of the query

Search loads a space's vectors into one [n, d] matrix and ranks by cosine (all vectors are unit length); a few
thousand files is a millisecond matrix product, so no approximate index is needed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine import paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS media (
    path        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    mtime       REAL NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    index_text  TEXT NOT NULL DEFAULT '',
    added       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    path  TEXT NOT NULL REFERENCES media(path) ON DELETE CASCADE,
    space TEXT NOT NULL,
    vec   BLOB NOT NULL,
    PRIMARY KEY (path, space)
);
"""


@dataclass
class Hit:
    path: str
    kind: str
    score: float
    description: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "kind": self.kind, "score": round(self.score, 4), "description": self.description}


def index_path() -> Path:
    return paths.data_dir() / "media_index.sqlite3"


class MediaIndex:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else index_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> MediaIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- writes
    def put(self, path: str | Path, kind: str, description: str, index_text: str,
            vectors: dict[str, np.ndarray]) -> None:
        """Add or replace a file's row and its vectors (old vectors of a changed file are dropped)."""
        p = Path(path).resolve()
        st = p.stat()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM media WHERE path = ?", (str(p),))
                self._conn.execute("INSERT INTO media VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (str(p), kind, st.st_size, st.st_mtime, description, index_text, time.time()))
                self._conn.executemany("INSERT INTO vectors VALUES (?, ?, ?)",
                                       [(str(p), s, _blob(v)) for s, v in vectors.items()])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def add_vector(self, path: str | Path, space: str, vec: np.ndarray) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                               (str(Path(path).resolve()), space, _blob(vec)))

    # -------------------------------------------------------------------------------------------- reads
    def fresh(self, path: str | Path, space: str) -> bool:
        """Indexed, unchanged since, and with a vector in `space`."""
        p = Path(path).resolve()
        try:
            st = p.stat()
        except OSError:
            return False
        with self._lock:
            row = self._conn.execute(
                "SELECT m.size, m.mtime FROM media m JOIN vectors v ON v.path = m.path "
                "WHERE m.path = ? AND v.space = ?", (str(p), space)).fetchone()
        return row is not None and row[0] == st.st_size and abs(row[1] - st.st_mtime) < 1e-3

    def count(self, space: str | None = None) -> int:
        with self._lock:
            if space is None:
                return int(self._conn.execute("SELECT count(*) FROM media").fetchone()[0])
            return int(self._conn.execute("SELECT count(*) FROM vectors WHERE space = ?", (space,)).fetchone()[0])

    def search(self, space: str, query: np.ndarray, limit: int = 10, kind: str = "") -> list[Hit]:
        """Files ranked by cosine between `query` and their vector in `space` (files since deleted are skipped)."""
        sql = ("SELECT m.path, m.kind, m.description, v.vec FROM media m JOIN vectors v ON v.path = m.path "
               "WHERE v.space = ?" + (" AND m.kind = ?" if kind else ""))
        with self._lock:
            rows = self._conn.execute(sql, (space, kind) if kind else (space,)).fetchall()
        rows = [r for r in rows if Path(r[0]).exists()]
        if not rows:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        mat = np.stack([np.frombuffer(r[3], dtype=np.float32) for r in rows])  # [n, d]
        if mat.shape[1] != q.shape[0]:
            return []  # a space whose model changed width: those vectors are stale
        scores = mat @ (q / (np.linalg.norm(q) or 1.0))
        order = np.argsort(-scores)[:limit]
        return [Hit(rows[i][0], rows[i][1], float(scores[i]), rows[i][2]) for i in order]


def history_media(history: Any) -> list[str]:
    """Paths of every image and video attached in the chat history (what the user has dropped), oldest first."""
    out: list[str] = []
    for conv in history.list_conversations(include_archived=True):
        for m in history.messages(conv.id, include_superseded=True):
            out.extend(a.path for a in history.attachments(m.id) if a.kind in ("image", "video"))
    return list(dict.fromkeys(out))


def _blob(vec: np.ndarray) -> bytes:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32).tobytes()
