"""The memory store's contract, run on every implementation: SQLite (a real file) and Postgres (a database
of its own per test, from tests/postgres.py). Writes, scopes, TTL, keyword ranking (every word before any),
hybrid fusion with fixed vectors, the vector cache after every kind of write (here and through another
store instance), hostile query text, concurrent writers on two store instances, bad input; the upgrade of an
older SQLite file; the embedder through LiteLLM."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from agentflow.memory.base import MemoryNotFound, MemoryStore, parse_scope, scope_name
from agentflow.memory.embeddings import Embedder, EmbeddingError
from agentflow.memory.search import fts_query
from agentflow.store.memories_postgres import PostgresMemoryStore, ts_query
from agentflow.store.memories_sqlite import SQLiteMemoryStore
from tests import postgres
from tests.fakes.openai_server import FakeLLM

pytestmark = pytest.mark.store_agnostic

Opener = Callable[[], MemoryStore]


def _postgres_url() -> Iterator[str]:
    try:
        url = postgres.create_database(migrated=False)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {postgres.ADMIN_URL}: {exc}")
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[MemoryStore] = []
    urls = _postgres_url() if request.param == "postgres" else None
    url = next(urls) if urls is not None else ""

    def open_store() -> MemoryStore:
        store: MemoryStore = PostgresMemoryStore(url) if url else SQLiteMemoryStore(tmp_path / "memory.db")
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
    if urls is not None:
        urls.close()


CORPUS = [
    "The refund window for annual plans is 30 days.",
    "Shipping to Norway takes about a week.",
    "Invoices are sent on the first of each month.",
    "Refunds for monthly plans are not available after renewal.",
    "The support team answers in English and German.",
]


def test_add_get_update_delete_and_list_newest_first(opener: Opener) -> None:
    store = opener()
    first = store.add("workflow:support", "The office opens at nine.", tags=["hours"], importance=0.8, source_run="r1")
    second = store.add("workflow:support", "The office closes at five.", data={"hour": 17})
    assert store.get(first.id) == first
    assert [item.id for item in store.list("workflow:support")] == [second.id, first.id]
    updated = store.update(first.id, text="The office opens at eight.", tags=["hours", "changed"])
    assert (updated.text, updated.tags, updated.importance) == ("The office opens at eight.", ("hours", "changed"), 0.8)
    assert updated.updated_at >= first.updated_at and updated.created_at == first.created_at
    assert store.delete(second.id) is True and store.delete(second.id) is False
    assert store.get(second.id) is None
    with pytest.raises(MemoryNotFound):
        store.update("missing", text="x")
    assert store.scopes() == [("workflow:support", 1)]
    assert store.forget("workflow:support") == 1 and store.list("workflow:support") == []


def test_memories_survive_reopening_the_file(opener: Opener) -> None:
    item = opener().add("workflow:notes", "The launch is on Friday.", embedding=[1.0, 0.0], embedding_model="m")
    again = opener()  # another store on the same file, as after a restart or in another process
    assert again.get(item.id) == item
    (hit,) = again.search(["workflow:notes"], "launch", k=1, embedding=[1.0, 0.0], embedding_model="m")
    assert hit.item == item and hit.keyword_rank == 1 and hit.vector_rank == 1


def test_keyword_search_ranks_the_best_match_first_and_stays_in_its_scopes(opener: Opener) -> None:
    store = opener()
    for text in CORPUS:
        store.add("workflow:support", text)
    store.add("workflow:sales", "Refund requests from sales leads go to the account manager.")
    hits = store.search(["workflow:support"], "refund window annual plan", k=3)
    assert hits[0].item.text == "The refund window for annual plans is 30 days."
    assert {hit.item.scope for hit in hits} == {"workflow:support"}
    assert all(hit.keyword_rank is not None and hit.vector_rank is None for hit in hits)
    both = store.search(["workflow:support", "workflow:sales"], "refund", k=10)
    assert {hit.item.scope for hit in both} == {"workflow:support", "workflow:sales"}
    assert store.search(["workflow:other"], "refund") == []


def test_memories_with_every_word_come_before_those_with_any(opener: Opener) -> None:
    store = opener()
    both = store.add("workflow:support", "Keep the receipt of every refund in the shared folder.")
    store.add("workflow:support", "Refund, refund, refund: refunds first.")
    store.add("workflow:support", "Receipt.")
    hits = store.search(["workflow:support"], "refund receipt", k=3)
    assert hits[0].item.id == both.id
    # No memory has every word: those with any of them are still found.
    assert {hit.item.text for hit in store.search(["workflow:support"], "receipt unicorn", k=3)} == {
        "Keep the receipt of every refund in the shared folder.",
        "Receipt.",
    }


def test_keyword_search_finds_a_scopes_few_matches_behind_many_better_ones_elsewhere(opener: Opener) -> None:
    store = opener()
    for number in range(150):  # short texts: each ranks above the longer ones of the small scope
        store.add("workflow:big", f"Refund {number}.")
    store.add("workflow:big", "Refund.", ttl_s=60)
    small = [store.add("workflow:small", f"A refund was asked for by customer number {n} today.") for n in range(3)]
    hits = store.search(["workflow:small"], "refund", k=5)
    assert sorted(hit.item.id for hit in hits) == sorted(item.id for item in small)
    both = store.search(["workflow:small", "workflow:big"], "refund", k=200, now=small[0].created_at + 3600)
    assert len(both) == 153  # the expired one is left out


def test_hybrid_search_fuses_keywords_and_vectors(opener: Opener) -> None:
    store = opener()
    vectors = {
        "The cat sat on the mat.": [1.0, 0.0, 0.0],
        "Felines enjoy warm windowsills.": [0.9, 0.1, 0.0],  # no shared words with the query: vectors find it
        "The stock market fell today.": [0.0, 0.0, 1.0],
        "A cat video went viral.": [0.1, 0.0, 0.9],  # a keyword match the vectors rank low
    }
    for text, vector in vectors.items():
        store.add("workflow:pets", text, embedding=vector, embedding_model="toy")
    hits = store.search(["workflow:pets"], "cat", k=3, embedding=[1.0, 0.05, 0.0], embedding_model="toy")
    texts = [hit.item.text for hit in hits]
    assert texts[0] == "The cat sat on the mat."  # found by both: first
    assert "Felines enjoy warm windowsills." in texts  # found by vectors alone
    top = hits[0]
    assert top.keyword_rank is not None and top.vector_rank == 1
    # Another model's vectors are never compared with these.
    other = store.search(["workflow:pets"], "windowsills", k=5, embedding=[0.0, 1.0], embedding_model="other")
    assert [hit.item.text for hit in other] == ["Felines enjoy warm windowsills."]


def test_vector_search_sees_every_write_since_the_last_search(opener: Opener) -> None:
    store, other = opener(), opener()  # `other` writes as another process would
    scope, model = "workflow:facts", "toy"

    def nearest(vector: list[float], **kwargs: float) -> list[str]:
        hits = store.search([scope], "zzz", k=3, embedding=vector, embedding_model=model, **kwargs)
        assert all(hit.keyword_rank is None for hit in hits)
        return [hit.item.id for hit in hits]

    north = store.add(scope, "north", embedding=[1.0, 0.0, 0.0], embedding_model=model)
    assert nearest([1.0, 0.0, 0.0]) == [north.id]  # the scope's vectors are cached from here on
    east = store.add(scope, "east", embedding=[0.0, 1.0, 0.0], embedding_model=model)
    assert nearest([0.0, 1.0, 0.0])[0] == east.id
    up = other.add(scope, "up", embedding=[0.0, 0.0, 1.0], embedding_model=model)
    assert nearest([0.0, 0.0, 1.0])[0] == up.id
    brief = store.add(scope, "brief", embedding=[0.0, -1.0, 0.0], embedding_model=model, ttl_s=60)
    assert nearest([0.0, -1.0, 0.0])[0] == brief.id
    assert brief.id not in nearest([0.0, -1.0, 0.0], now=brief.created_at + 120)
    store.update(east.id, embedding=[-1.0, 0.0, 0.0], embedding_model=model)
    assert nearest([-1.0, 0.0, 0.0])[0] == east.id
    other.update(north.id, text="north, renamed")  # a new text without a vector drops the old vector
    assert north.id not in nearest([1.0, 0.0, 0.0])
    other.delete(up.id)
    assert up.id not in nearest([0.0, 0.0, 1.0])
    other.forget(scope)
    assert nearest([1.0, 0.0, 0.0]) == []
    again = other.add(scope, "again", embedding=[1.0, 0.0, 0.0], embedding_model=model)
    assert nearest([1.0, 0.0, 0.0]) == [again.id]


def test_expired_memories_are_never_returned(opener: Opener) -> None:
    store = opener()
    kept = store.add("workflow:news", "The beta ends in December.")
    brief = store.add("workflow:news", "Today's standup moved to ten.", ttl_s=3600)
    later = brief.created_at + 7200
    assert [hit.item.id for hit in store.search(["workflow:news"], "standup", now=brief.created_at)] == [brief.id]
    assert store.search(["workflow:news"], "standup", now=later) == []
    assert store.purge_expired(now=later) == 1
    assert [item.id for item in store.list("workflow:news")] == [kept.id]


@pytest.mark.parametrize("query", ['"', "*", "NEAR(refund", "-refund", "text:refund", "refund OR", "()", "^ '"])
def test_query_text_is_never_fts_syntax(opener: Opener, query: str) -> None:
    store = opener()
    store.add("workflow:support", "Refund requests are answered within a day.")
    hits = store.search(["workflow:support"], query)
    if "refund" in query.lower():
        assert [hit.item.text for hit in hits] == ["Refund requests are answered within a day."]
    assert fts_query(query) is None or all(part.startswith('"') for part in fts_query(query).split(" OR "))  # type: ignore[union-attr]


def test_a_query_without_words_returns_the_newest(opener: Opener) -> None:
    store = opener()
    store.add("workflow:log", "first")
    newest = store.add("workflow:log", "second")
    assert [hit.item.id for hit in store.search(["workflow:log"], "?!", k=1)] == [newest.id]


def test_concurrent_writers_on_two_stores_and_many_threads_all_land(opener: Opener) -> None:
    stores = [opener(), opener()]
    failures: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for number in range(20):
                stores[index % 2].add("workflow:busy", f"writer {index} fact {number}")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert stores[0].scopes() == [("workflow:busy", 120)]
    assert len(stores[1].search(["workflow:busy"], "writer fact", k=50)) == 50


def test_bad_input_is_refused_with_the_fix(opener: Opener) -> None:
    store = opener()
    with pytest.raises(ValueError, match="unknown memory scope 'team'"):
        store.add("team:x", "text")
    with pytest.raises(ValueError, match="needs some text"):
        store.add("workflow:a", "   ")
    with pytest.raises(ValueError, match="importance is between 0 and 1"):
        store.add("workflow:a", "text", importance=2)
    with pytest.raises(ValueError, match="finite numbers"):
        store.add("workflow:a", "text", embedding=[float("nan")], embedding_model="m")
    with pytest.raises(ValueError, match="same model"):
        store.add("workflow:a", "text", embedding=[1.0, 0.0], embedding_model="m")
        store.search(["workflow:a"], "text", embedding=[1.0, 0.0, 0.0], embedding_model="m")
    with pytest.raises(ValueError, match="global scope has no key"):
        scope_name("global", "x")
    assert parse_scope("user:triage/telegram:42") == ("user", "triage/telegram:42")


@pytest.mark.parametrize("query", ["a & !b", "x:*", "a <-> b", "'", "\\"])
def test_tsquery_text_is_only_quoted_words(query: str) -> None:
    expression = ts_query(query)
    assert expression is None or all(part.startswith("'") and part.endswith("'") for part in expression.split(" | "))


OLD_SQLITE_SCHEMA = """
CREATE TABLE memories (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, text TEXT NOT NULL, data TEXT,
    tags TEXT NOT NULL DEFAULT '[]', importance REAL NOT NULL DEFAULT 0.5, source_run TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL, embedding BLOB, embedding_model TEXT
);
CREATE TABLE memory_scope_versions (scope TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE VIRTUAL TABLE memories_fts USING fts5(
    text, content='memories', content_rowid='seq', tokenize='porter unicode61'
);
CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, text) VALUES (new.seq, new.text);
END;
INSERT INTO memories (id, scope, text, created_at, updated_at, embedding, embedding_model)
    VALUES ('old1', 'workflow:notes', 'The launch is on Friday.', 1, 1, X'0000803F00000000', 'm');
INSERT INTO memory_scope_versions VALUES ('workflow:notes', 1);
"""
"""A memory.db as the first version wrote it: every write bumped `version`, nothing else told updates apart."""


def test_an_older_sqlite_file_is_upgraded_and_its_vector_cache_sees_updates(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SQLITE_SCHEMA)
    store = SQLiteMemoryStore(path)
    try:
        (hit,) = store.search(["workflow:notes"], "launch", k=1, embedding=[1.0, 0.0], embedding_model="m")
        assert (hit.item.id, hit.keyword_rank, hit.vector_rank) == ("old1", 1, 1)
        with sqlite3.connect(path) as db:  # a process of the older version updates it: only `version` moves
            db.execute("UPDATE memories SET embedding = NULL WHERE id = 'old1'")
            db.execute("UPDATE memory_scope_versions SET version = version + 1")
        (hit,) = store.search(["workflow:notes"], "launch", k=1, embedding=[1.0, 0.0], embedding_model="m")
        assert hit.vector_rank is None
        assert SQLiteMemoryStore(path).get("old1") is not None  # opening it again changes nothing
    finally:
        store.close()


async def test_the_embedder_calls_litellm_and_caches_queries(fake_llm: FakeLLM) -> None:
    embedder = Embedder(model="openai/test-embed", api_base=fake_llm.base_url, api_key="k")
    (first, second) = await embedder.embed(["cats purr", "dogs bark"])
    assert len(first) == len(second) == 8 and first != second
    assert await embedder.embed_query("cats purr") == await embedder.embed_query("cats purr")
    assert len(fake_llm.embedding_requests) == 2  # the batch, then one query: the repeat came from the cache


async def test_a_failing_embedding_model_says_which_one(fake_llm: FakeLLM) -> None:
    embedder = Embedder(model="openai/test-embed", api_base=fake_llm.base_url.replace("/v1", "/nowhere"), api_key="k")
    with pytest.raises(EmbeddingError, match="embedding model openai/test-embed failed"):
        await embedder.embed(["x"])
