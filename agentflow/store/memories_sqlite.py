"""The memory store on SQLite: a table of memories, an FTS5 index over their text (bm25), vectors as
float32 blobs searched in numpy (this Python cannot load SQLite extensions, so no sqlite-vec).

It lives in its own file beside the main store (`AGENTFLOW_HOME/memory.db`): memory grows on its own
schedule, is exported and forgotten on its own, and never slows the runs' tables. WAL and a busy timeout
let several processes and threads write at once; each thread has its own connection.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentflow.memory.base import MemoryHit, MemoryItem, MemoryNotFound, check_item, parse_scope
from agentflow.memory.search import Matrix, VectorIndex, fts_query, fuse, nearest, to_blob

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    importance REAL NOT NULL DEFAULT 0.5,
    source_run TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    embedding BLOB,
    embedding_model TEXT
);
CREATE INDEX IF NOT EXISTS memories_by_scope ON memories (scope, updated_at);
CREATE INDEX IF NOT EXISTS memories_by_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS memories_vectors ON memories (scope, embedding_model, seq) WHERE embedding IS NOT NULL;
CREATE TABLE IF NOT EXISTS memory_scope_versions (
    scope TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    changed INTEGER NOT NULL DEFAULT 0
);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, content='memories', content_rowid='seq', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_update AFTER UPDATE OF text ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);
    INSERT INTO memories_fts (rowid, text) VALUES (new.seq, new.text);
END;
"""
CHANGE_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS memories_changed_update AFTER UPDATE ON memories BEGIN
    UPDATE memory_scope_versions SET changed = changed + 1 WHERE scope = old.scope;
END;
CREATE TRIGGER IF NOT EXISTS memories_changed_delete AFTER DELETE ON memories BEGIN
    UPDATE memory_scope_versions SET changed = changed + 1 WHERE scope = old.scope;
END;
"""
"""`version` counts every write to a scope, `changed` only those that alter or remove a memory: a cached
vector matrix appends the rows added since, and is rebuilt only when `changed` moved. Triggers keep
`changed`, so a process of an older version, which bumps only `version`, still invalidates the caches."""
COLUMNS = "id, scope, text, data, tags, importance, source_run, created_at, updated_at, expires_at"
CANDIDATES = 4
"""Each ranking contributes this many times `k` candidates to the fusion."""
MAX_BATCH = 4096
"""The most keyword matches whose scope is looked up at once (SQLite allows 32,766 parameters)."""


class SQLiteMemoryStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._vectors = VectorIndex()
        db = self._db()
        db.executescript(SCHEMA)  # its own transaction; IF NOT EXISTS makes a second process's a no-op
        _upgrade(db)
        db.executescript(CHANGE_TRIGGERS)

    # -- connections ---------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._guard:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        with self._guard:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    # -- writing -------------------------------------------------------------------------------

    @staticmethod
    def _bump(db: sqlite3.Connection, scope: str) -> None:
        db.execute(
            "INSERT INTO memory_scope_versions (scope, version) VALUES (?, 1) "
            "ON CONFLICT (scope) DO UPDATE SET version = version + 1",
            (scope,),
        )

    def add(
        self,
        scope: str,
        text: str,
        *,
        data: dict[str, Any] | None = None,
        tags: Sequence[str] = (),
        importance: float = 0.5,
        source_run: str | None = None,
        ttl_s: float | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> MemoryItem:
        parse_scope(scope)
        check_item(text, tags, importance)
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"a memory's ttl is a positive number of seconds (got {ttl_s})")
        blob = to_blob(embedding) if embedding is not None else None
        now = time.time()
        item = MemoryItem(
            id=uuid.uuid4().hex[:16],
            scope=scope,
            text=text,
            data=data,
            tags=tuple(dict.fromkeys(tags)),
            importance=float(importance),
            source_run=source_run,
            created_at=now,
            updated_at=now,
            expires_at=now + ttl_s if ttl_s is not None else None,
        )
        with self._write() as db:
            db.execute(
                f"INSERT INTO memories ({COLUMNS}, embedding, embedding_model) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*_row(item), blob, embedding_model if blob is not None else None),
            )
            self._bump(db, scope)
        return item

    def update(
        self,
        item_id: str,
        *,
        text: str | None = None,
        data: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        importance: float | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> MemoryItem:
        with self._write() as db:
            current = _item(db.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ?", (item_id,)).fetchone())
            if current is None:
                raise MemoryNotFound(item_id)
            new_text = current.text if text is None else text
            new_tags = current.tags if tags is None else tuple(dict.fromkeys(tags))
            new_importance = current.importance if importance is None else float(importance)
            check_item(new_text, new_tags, new_importance)
            changes: dict[str, Any] = {
                "text": new_text,
                "data": json.dumps(data) if data is not None else _json(current.data),
                "tags": json.dumps(list(new_tags)),
                "importance": new_importance,
                "updated_at": time.time(),
            }
            if embedding is not None:
                changes |= {"embedding": to_blob(embedding), "embedding_model": embedding_model}
            elif text is not None and text != current.text:
                changes |= {"embedding": None, "embedding_model": None}  # the old vector described the old text
            assignments = ", ".join(f"{column} = ?" for column in changes)
            db.execute(f"UPDATE memories SET {assignments} WHERE id = ?", (*changes.values(), item_id))
            self._bump(db, current.scope)
            row = db.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ?", (item_id,)).fetchone()
        updated = _item(row)
        assert updated is not None
        return updated

    def delete(self, item_id: str) -> bool:
        with self._write() as db:
            row = db.execute("SELECT scope FROM memories WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM memories WHERE id = ?", (item_id,))
            self._bump(db, row[0])
        return True

    def forget(self, scope: str) -> int:
        parse_scope(scope)
        with self._write() as db:
            count = db.execute("DELETE FROM memories WHERE scope = ?", (scope,)).rowcount
            self._bump(db, scope)
        self._vectors.forget(scope)
        return count

    def purge_expired(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._write() as db:
            scopes = [row[0] for row in db.execute("SELECT DISTINCT scope FROM memories WHERE expires_at <= ?", (now,))]
            count = db.execute("DELETE FROM memories WHERE expires_at <= ?", (now,)).rowcount
            for scope in scopes:
                self._bump(db, scope)
        return count

    # -- reading -------------------------------------------------------------------------------

    def get(self, item_id: str) -> MemoryItem | None:
        row = (
            self._db()
            .execute(
                f"SELECT {COLUMNS} FROM memories WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (item_id, time.time()),
            )
            .fetchone()
        )
        return _item(row)

    def list(self, scope: str | None = None, *, limit: int = 100, offset: int = 0) -> builtins.list[MemoryItem]:
        where, params = "(expires_at IS NULL OR expires_at > ?)", builtins.list[Any]([time.time()])
        if scope is not None:
            where, params = f"scope = ? AND {where}", [scope, *params]
        rows = self._db().execute(
            f"SELECT {COLUMNS} FROM memories WHERE {where} ORDER BY updated_at DESC, seq DESC LIMIT ? OFFSET ?",
            (*params, max(limit, 0), max(offset, 0)),
        )
        return [item for item in map(_item, rows) if item is not None]

    def scopes(self) -> builtins.list[tuple[str, int]]:
        rows = self._db().execute(
            "SELECT scope, count(*) FROM memories WHERE expires_at IS NULL OR expires_at > ? GROUP BY scope "
            "ORDER BY scope",
            (time.time(),),
        )
        return [(scope, count) for scope, count in rows]

    def search(
        self,
        scopes: Sequence[str],
        query: str,
        *,
        k: int = 5,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
        now: float | None = None,
    ) -> builtins.list[MemoryHit]:
        if k < 1:
            raise ValueError(f"k is at least 1 (got {k})")
        scopes = list(dict.fromkeys(scopes))
        for scope in scopes:
            parse_scope(scope)
        if not scopes:
            return []
        now = time.time() if now is None else now
        db = self._db()
        marks = ",".join("?" * len(scopes))
        limit = k * CANDIDATES
        match = fts_query(query)
        keyword: list[str] = []
        for expression in dict.fromkeys([fts_query(query, every=True), match]):
            if expression is None or len(keyword) >= limit:
                continue
            keyword = list(dict.fromkeys([*keyword, *_matching(db, expression, scopes, now, limit)]))[:limit]
        vector: list[str] = []
        if embedding is not None and embedding_model:
            vector = self._nearest(db, scopes, embedding, embedding_model, limit, now)
        if match is None and not vector:  # no words to look for: the newest memories
            keyword = [
                row[0]
                for row in db.execute(
                    f"SELECT id FROM memories WHERE scope IN ({marks}) AND (expires_at IS NULL OR expires_at > ?) "
                    "ORDER BY updated_at DESC, seq DESC LIMIT ?",
                    (*scopes, now, k),
                )
            ]
        candidates = list(dict.fromkeys([*keyword, *vector]))
        if not candidates:
            return []
        items = {item.id: item for item in self._items(db, candidates)}
        fused = fuse(
            [item_id for item_id in keyword if item_id in items],
            [item_id for item_id in vector if item_id in items],
            {item_id: item.importance for item_id, item in items.items()},
            {item_id: item.updated_at for item_id, item in items.items()},
            now,
        )
        return [MemoryHit(items[item_id], score, rank_k, rank_v) for item_id, score, rank_k, rank_v in fused[:k]]

    def _nearest(
        self,
        db: sqlite3.Connection,
        scopes: builtins.list[str],
        embedding: Sequence[float],
        model: str,
        limit: int,
        now: float,
    ) -> builtins.list[str]:
        found: list[tuple[str, float]] = []
        for scope in scopes:
            matrix = self._matrix(db, scope, model)
            if matrix is not None:
                found += nearest(matrix, embedding, limit, now)
        found.sort(key=lambda pair: -pair[1])
        return [item_id for item_id, _ in found[:limit]]

    def _matrix(self, db: sqlite3.Connection, scope: str, model: str) -> Matrix | None:
        """The scope's cached vectors: as they were when nothing changed, with the rows added since appended,
        or reloaded after an update or a delete (here or in another process)."""
        row = db.execute("SELECT version, changed FROM memory_scope_versions WHERE scope = ?", (scope,)).fetchone()
        writes, changed = row if row else (0, 0)  # read before the rows: a write in between is seen next time
        matrix = self._vectors.cached(scope, model, changed)
        if matrix is not None and matrix.writes != writes:
            rows, last_seq = _vector_rows(db, scope, model, after=matrix.last_seq)
            matrix = self._vectors.extend(
                scope, model, matrix, rows, writes=writes, last_seq=max(last_seq, matrix.last_seq)
            )
        if matrix is None:
            rows, last_seq = _vector_rows(db, scope, model, after=0)
            matrix = self._vectors.build(scope, model, changed, rows, writes=writes, last_seq=last_seq)
        return matrix

    @staticmethod
    def _items(db: sqlite3.Connection, ids: builtins.list[str]) -> builtins.list[MemoryItem]:
        marks = ",".join("?" * len(ids))
        rows = db.execute(f"SELECT {COLUMNS} FROM memories WHERE id IN ({marks})", ids)
        return [item for item in map(_item, rows) if item is not None]


def _matching(
    db: sqlite3.Connection, expression: str, scopes: builtins.list[str], now: float, limit: int
) -> builtins.list[str]:
    """The ids of the `limit` best live memories of `scopes` for an FTS5 expression, best first.

    FTS5 ranks every match from its own index; the scope and expiry are then looked up for a batch of the
    best rows at a time (a join would look them up for every match, ~1 ms per thousand rows). Ties go to
    the newer memory."""
    marks = ",".join("?" * len(scopes))
    ranked = db.execute(
        "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? ORDER BY bm25(memories_fts), rowid DESC",
        (expression,),
    )
    found: builtins.list[str] = []
    batch = 2 * limit
    try:
        while len(found) < limit and (seqs := [seq for (seq,) in ranked.fetchmany(batch)]):
            live = dict(  # looked up by seq (`+scope`: not through the scope index, which would scan the scope)
                db.execute(
                    f"SELECT seq, id FROM memories WHERE seq IN ({','.join('?' * len(seqs))}) "
                    f"AND +scope IN ({marks}) AND (expires_at IS NULL OR expires_at > ?)",
                    (*seqs, *scopes, now),
                )
            )
            found += [live[seq] for seq in seqs if seq in live]
            batch = min(2 * batch, MAX_BATCH)  # few of the best are in these scopes: look further, faster
    finally:
        ranked.close()  # an unfinished statement would hold its read snapshot open
    return found[:limit]


def _vector_rows(
    db: sqlite3.Connection, scope: str, model: str, *, after: int
) -> tuple[builtins.list[tuple[str, bytes, float | None]], int]:
    """The scope's vectors of `model` added after row `after`, oldest first, and the newest row's seq."""
    rows = db.execute(
        "SELECT seq, id, embedding, expires_at FROM memories WHERE scope = ? AND embedding_model = ? "
        "AND embedding IS NOT NULL AND seq > ? ORDER BY seq",
        (scope, model, after),
    ).fetchall()
    return [(item_id, blob, expires_at) for _, item_id, blob, expires_at in rows], rows[-1][0] if rows else after


def _upgrade(db: sqlite3.Connection) -> None:
    """A file from before `memory_scope_versions.changed` gets the column (its caches rebuild once)."""

    def missing() -> bool:
        return "changed" not in {row[1] for row in db.execute("PRAGMA table_info(memory_scope_versions)")}

    if missing():
        db.execute("BEGIN IMMEDIATE")
        try:
            if missing():  # not added by another process meanwhile
                db.execute("ALTER TABLE memory_scope_versions ADD COLUMN changed INTEGER NOT NULL DEFAULT 0")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _json(value: Any) -> str | None:
    return json.dumps(value) if value is not None else None


def _row(item: MemoryItem) -> tuple[Any, ...]:
    return (
        item.id,
        item.scope,
        item.text,
        _json(item.data),
        json.dumps(list(item.tags)),
        item.importance,
        item.source_run,
        item.created_at,
        item.updated_at,
        item.expires_at,
    )


def _item(row: tuple[Any, ...] | None) -> MemoryItem | None:
    if row is None:
        return None
    item_id, scope, text, data, tags, importance, source_run, created_at, updated_at, expires_at = row
    return MemoryItem(
        id=item_id,
        scope=scope,
        text=text,
        data=json.loads(data) if data else None,
        tags=tuple(json.loads(tags or "[]")),
        importance=importance,
        source_run=source_run,
        created_at=created_at,
        updated_at=updated_at,
        expires_at=expires_at,
    )
