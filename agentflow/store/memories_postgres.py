"""The memory store on Postgres: the same contract as SQLite's (tests/integration/test_memory_store.py).

Keywords: a generated `tsvector` column with a GIN index, ranked by `ts_rank_cd`. Vectors: float32 `bytea`
searched in numpy with the same per-scope matrix cache as SQLite (no pgvector needed on the server). The
tables are created on first open under an advisory lock, so two processes opening at once do not race.
"""

from __future__ import annotations

import builtins
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from agentflow.memory.base import MemoryHit, MemoryItem, MemoryNotFound, check_item, parse_scope
from agentflow.memory.search import VectorIndex, fuse, nearest, to_blob

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    text TEXT NOT NULL,
    data JSONB,
    tags JSONB NOT NULL DEFAULT '[]',
    importance DOUBLE PRECISION NOT NULL DEFAULT 0.5,
    source_run TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    embedding BYTEA,
    embedding_model TEXT,
    words TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
CREATE INDEX IF NOT EXISTS memories_by_scope ON memories (scope, updated_at);
CREATE INDEX IF NOT EXISTS memories_by_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS memories_words ON memories USING GIN (words);
CREATE TABLE IF NOT EXISTS memory_scope_versions (scope TEXT PRIMARY KEY, version BIGINT NOT NULL);
"""
SCHEMA_LOCK = 0x6D656D6F  # "memo": one advisory lock id for creating the tables
COLUMNS = "id, scope, text, data, tags, importance, source_run, created_at, updated_at, expires_at"
CANDIDATES = 4
MAX_TERMS = 32
_TERM = re.compile(r"\w+", re.UNICODE)


def ts_query(text: str, *, every: bool = False) -> str | None:
    """A `to_tsquery` expression for free text: each word quoted and OR-ed (`every`: AND-ed), so `&`, `!`,
    `:*` or `<->` in model or user text are never tsquery syntax; None when there are no words."""
    terms = list(dict.fromkeys(term.lower() for term in _TERM.findall(text)))[:MAX_TERMS]
    return (" & " if every else " | ").join(f"'{term}'" for term in terms) if terms else None


class PostgresMemoryStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._guard = threading.Lock()
        self._vectors = VectorIndex()
        db = self._db()
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            db.execute(SCHEMA)

    def _db(self) -> psycopg.Connection[Any]:
        db = getattr(self._local, "db", None)
        if db is None or db.closed:
            db = psycopg.connect(self.url, autocommit=True, application_name="agentflow-memory")
            self._local.db = db
            with self._guard:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        db = self._db()
        with db.transaction():
            yield db

    def close(self) -> None:
        with self._guard:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    @staticmethod
    def _bump(db: psycopg.Connection[Any], scope: str) -> None:
        db.execute(
            "INSERT INTO memory_scope_versions (scope, version) VALUES (%s, 1) "
            "ON CONFLICT (scope) DO UPDATE SET version = memory_scope_versions.version + 1",
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
                f"INSERT INTO memories ({COLUMNS}, embedding, embedding_model) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
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
            row = db.execute(f"SELECT {COLUMNS} FROM memories WHERE id = %s FOR UPDATE", (item_id,)).fetchone()
            current = _item(row)
            if current is None:
                raise MemoryNotFound(item_id)
            new_text = current.text if text is None else text
            new_tags = current.tags if tags is None else tuple(dict.fromkeys(tags))
            new_importance = current.importance if importance is None else float(importance)
            check_item(new_text, new_tags, new_importance)
            changes: dict[str, Any] = {
                "text": new_text,
                "data": _json(data if data is not None else current.data),
                "tags": json.dumps(list(new_tags)),
                "importance": new_importance,
                "updated_at": time.time(),
            }
            if embedding is not None:
                changes |= {"embedding": to_blob(embedding), "embedding_model": embedding_model}
            elif text is not None and text != current.text:
                changes |= {"embedding": None, "embedding_model": None}  # the old vector described the old text
            assignments = ", ".join(f"{column} = %s" for column in changes)
            db.execute(f"UPDATE memories SET {assignments} WHERE id = %s", (*changes.values(), item_id))
            self._bump(db, current.scope)
            updated = _item(db.execute(f"SELECT {COLUMNS} FROM memories WHERE id = %s", (item_id,)).fetchone())
        assert updated is not None
        return updated

    def delete(self, item_id: str) -> bool:
        with self._write() as db:
            row = db.execute("DELETE FROM memories WHERE id = %s RETURNING scope", (item_id,)).fetchone()
            if row is None:
                return False
            self._bump(db, row[0])
        return True

    def forget(self, scope: str) -> int:
        parse_scope(scope)
        with self._write() as db:
            count = db.execute("DELETE FROM memories WHERE scope = %s", (scope,)).rowcount
            self._bump(db, scope)
        self._vectors.forget(scope)
        return count

    def purge_expired(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._write() as db:
            scopes = [
                row[0] for row in db.execute("DELETE FROM memories WHERE expires_at <= %s RETURNING scope", (now,))
            ]
            for scope in dict.fromkeys(scopes):
                self._bump(db, scope)
        return len(scopes)

    def get(self, item_id: str) -> MemoryItem | None:
        row = (
            self._db()
            .execute(
                f"SELECT {COLUMNS} FROM memories WHERE id = %s AND (expires_at IS NULL OR expires_at > %s)",
                (item_id, time.time()),
            )
            .fetchone()
        )
        return _item(row)

    def list(self, scope: str | None = None, *, limit: int = 100, offset: int = 0) -> builtins.list[MemoryItem]:
        where, params = "(expires_at IS NULL OR expires_at > %s)", builtins.list[Any]([time.time()])
        if scope is not None:
            where, params = f"scope = %s AND {where}", [scope, *params]
        rows = self._db().execute(
            f"SELECT {COLUMNS} FROM memories WHERE {where} ORDER BY updated_at DESC, seq DESC LIMIT %s OFFSET %s",
            (*params, max(limit, 0), max(offset, 0)),
        )
        return [item for item in map(_item, rows) if item is not None]

    def scopes(self) -> builtins.list[tuple[str, int]]:
        rows = self._db().execute(
            "SELECT scope, count(*) FROM memories WHERE expires_at IS NULL OR expires_at > %s GROUP BY scope "
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
        limit = k * CANDIDATES
        match = ts_query(query)
        keyword: list[str] = []
        for expression in dict.fromkeys([ts_query(query, every=True), match]):  # every word first, then any
            if expression is None or len(keyword) >= limit:
                continue
            found = db.execute(
                "SELECT id FROM memories, to_tsquery('english', %s) AS q "
                "WHERE words @@ q AND scope = ANY(%s) AND (expires_at IS NULL OR expires_at > %s) "
                "ORDER BY ts_rank_cd(words, q) DESC, updated_at DESC LIMIT %s",
                (expression, scopes, now, limit),
            )
            keyword = list(dict.fromkeys([*keyword, *(row[0] for row in found)]))[:limit]
        vector: list[str] = []
        if embedding is not None and embedding_model:
            vector = self._nearest(db, scopes, embedding, embedding_model, limit, now)
        if match is None and not vector:  # no words to look for: the newest memories
            keyword = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM memories WHERE scope = ANY(%s) AND (expires_at IS NULL OR expires_at > %s) "
                    "ORDER BY updated_at DESC, seq DESC LIMIT %s",
                    (scopes, now, k),
                )
            ]
        candidates = list(dict.fromkeys([*keyword, *vector]))
        if not candidates:
            return []
        rows = db.execute(f"SELECT {COLUMNS} FROM memories WHERE id = ANY(%s)", (candidates,))
        items = {item.id: item for item in map(_item, rows) if item is not None}
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
        db: psycopg.Connection[Any],
        scopes: builtins.list[str],
        embedding: Sequence[float],
        model: str,
        limit: int,
        now: float,
    ) -> builtins.list[str]:
        found: list[tuple[str, float]] = []
        for scope in scopes:
            row = db.execute("SELECT version FROM memory_scope_versions WHERE scope = %s", (scope,)).fetchone()
            version = row[0] if row else 0
            matrix = self._vectors.cached(scope, model, version)
            if matrix is None:
                rows = db.execute(
                    "SELECT id, embedding, expires_at FROM memories WHERE scope = %s AND embedding_model = %s "
                    "AND embedding IS NOT NULL",
                    (scope, model),
                ).fetchall()
                matrix = self._vectors.build(scope, model, version, [(i, bytes(b), e) for i, b, e in rows])
            if matrix is not None:
                found += nearest(matrix, embedding, limit, now)
        found.sort(key=lambda pair: -pair[1])
        return [item_id for item_id, _ in found[:limit]]


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
        data=data if data else None,
        tags=tuple(tags or ()),
        importance=importance,
        source_run=source_run,
        created_at=created_at,
        updated_at=updated_at,
        expires_at=expires_at,
    )
