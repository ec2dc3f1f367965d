"""The AgentStore contract on every backend (memory, SQLite, Postgres), and the registry's lookups over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agentflow.registry import Registry
from agentflow.settings import Settings
from agentflow.store.base import AgentRecord, CardChange, EnrolmentToken, Store
from agentflow.store.memory import InMemoryStore
from agentflow.store.postgres import PostgresStore
from agentflow.store.sqlite import SQLiteStore

T0 = 1_900_000_000.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    instance: Store
    if request.param == "memory":
        instance = InMemoryStore()
    elif request.param == "sqlite":
        instance = SQLiteStore(tmp_path / "store.db")
    else:
        instance = PostgresStore(request.getfixturevalue("postgres_url"), queue=False)
    yield instance
    instance.close()


def agent(agent_id: str, name: str = "writer", **fields: object) -> AgentRecord:
    values: dict[str, object] = {
        "url": f"http://127.0.0.1:1/{agent_id}",
        "card_url": f"http://127.0.0.1:1/{agent_id}/.well-known/agent-card.json",
        "card": {"name": name, "skills": [{"id": "summarise"}], "odd": "bad \ud800 end"},
        "source": "url",
        "created_at": T0,
        "skills": [{"id": "summarise", "name": "Summarise", "description": "", "tags": ["text"]}],
    }
    values.update(fields)
    return AgentRecord(id=agent_id, name=name, **values)  # type: ignore[arg-type]


def test_agents_are_saved_replaced_listed_and_deleted(store: Store) -> None:
    first = agent("agt_1", card_version="1", card_etag='"e1"', secret_hash="ab" * 32, last_seen=T0, latency_ms=3.5)
    store.save_agent(first)
    store.save_agent(agent("agt_2", "reader", created_at=T0 + 1))
    found = store.get_agent("agt_1")
    assert found is not None and found.card["name"] == "writer" and found.secret_hash == "ab" * 32
    assert found.card["odd"].startswith("bad ")  # odd text survives the round trip
    assert replace(found, card=first.card) == first
    store.save_agent(replace(first, name="writer2", card_version="2"))
    assert [(item.id, item.name) for item in store.list_agents()] == [("agt_1", "writer2"), ("agt_2", "reader")]
    assert store.get_agent("agt_nope") is None
    assert store.delete_agent("agt_2") is True and store.delete_agent("agt_2") is False
    assert [item.id for item in store.list_agents()] == ["agt_1"]


def test_touching_moves_only_the_fields_given(store: Store) -> None:
    store.save_agent(agent("agt_1", last_seen=T0, latency_ms=10.0))
    assert store.touch_agent("agt_1", seen_at=T0 + 5, latency_ms=None) is True
    found = store.get_agent("agt_1")
    assert found is not None and (found.last_seen, found.latency_ms) == (T0 + 5, 10.0)
    assert store.touch_agent("agt_1", seen_at=None, latency_ms=2.0) is True
    found = store.get_agent("agt_1")
    assert found is not None and (found.last_seen, found.latency_ms) == (T0 + 5, 2.0)
    assert store.touch_agent("agt_nope", seen_at=T0, latency_ms=None) is False


def test_heartbeats_are_written_together_and_never_move_last_seen_back(store: Store) -> None:
    store.save_agent(agent("agt_1", last_seen=T0 + 10))
    store.save_agent(agent("agt_2", last_seen=None))
    assert store.touch_agents({"agt_1": T0 + 5, "agt_2": T0 + 7, "agt_gone": T0}) == ["agt_gone"]
    assert [(item.id, item.last_seen) for item in store.list_agents()] == [("agt_1", T0 + 10), ("agt_2", T0 + 7)]
    assert store.touch_agents({"agt_1": T0 + 20}) == []
    found = store.get_agent("agt_1")
    assert found is not None and found.last_seen == T0 + 20
    assert store.touch_agents({}) == []


def test_silent_agents_are_deleted_with_their_history(store: Store) -> None:
    store.save_agent(agent("agt_old", last_seen=T0))
    store.save_agent(agent("agt_never", created_at=T0 - 10))  # never heard from: counted from creation
    store.save_agent(agent("agt_new", last_seen=T0 + 100))
    store.record_card_change(CardChange("agt_old", T0, "1", ["summarise"], "first card"))
    assert store.delete_agents_unseen_since(T0 + 50) == ["agt_never", "agt_old"]
    assert [item.id for item in store.list_agents()] == ["agt_new"]
    assert store.card_history("agt_old") == []


def test_card_history_is_append_only_and_per_agent(store: Store) -> None:
    store.save_agent(agent("agt_1"))
    store.record_card_change(CardChange("agt_1", T0, "1", ["a"], "first card"))
    store.record_card_change(CardChange("agt_1", T0 + 1, None, [], "skills removed: a"))
    store.record_card_change(CardChange("agt_2", T0, "9", ["b"], "first card"))
    assert store.card_history("agt_1") == [
        CardChange("agt_1", T0, "1", ["a"], "first card"),
        CardChange("agt_1", T0 + 1, None, [], "skills removed: a"),
    ]
    store.delete_agent("agt_1")
    assert store.card_history("agt_1") == [] and len(store.card_history("agt_2")) == 1


def test_an_enrolment_token_is_used_once_and_only_while_valid(store: Store) -> None:
    store.add_enrolment_token(EnrolmentToken("tok_a", "hash-a", T0, T0 + 60, note="laptop"))
    store.add_enrolment_token(EnrolmentToken("tok_b", "hash-b", T0 + 1, T0 + 60))
    store.add_enrolment_token(EnrolmentToken("tok_c", "hash-c", T0 + 2, T0 + 60))
    assert [token.id for token in store.enrolment_tokens()] == ["tok_c", "tok_b", "tok_a"]
    assert store.use_enrolment_token("hash-a", agent_id="agt_1", now=T0 + 60) is False  # expired at 60
    assert store.use_enrolment_token("hash-a", agent_id="agt_1", now=T0 + 5) is True
    assert store.use_enrolment_token("hash-a", agent_id="agt_2", now=T0 + 6) is False  # one-time
    assert store.enrolment_token("hash-a") == EnrolmentToken(
        "tok_a", "hash-a", T0, T0 + 60, note="laptop", used_at=T0 + 5, used_by="agt_1"
    )
    assert store.revoke_enrolment_token("tok_a", now=T0 + 7) is False  # used: nothing to revoke
    assert store.revoke_enrolment_token("tok_b", now=T0 + 7) is True
    assert store.revoke_enrolment_token("tok_b", now=T0 + 8) is False
    assert store.use_enrolment_token("hash-b", agent_id="agt_3", now=T0 + 9) is False
    assert store.revoke_enrolment_token("tok_nope", now=T0) is False
    assert store.enrolment_token("hash-nope") is None
    revoked = store.enrolment_token("hash-b")
    assert revoked is not None and revoked.revoked_at == T0 + 7 and revoked.used_at is None


def test_candidates_by_name_and_skill_healthy_first_then_fastest(store: Store) -> None:
    now = T0 + 1000
    ttl = 30.0
    rows = [
        agent("agt_slow", "writer", last_seen=now, latency_ms=90.0),
        agent("agt_fast", "writer", last_seen=now - 5, latency_ms=10.0),
        agent("agt_unmeasured", "writer", last_seen=now),
        agent("agt_stale", "writer", last_seen=now - ttl - 1, latency_ms=1.0),
        agent("agt_offline", "writer", last_seen=now - 3 * ttl - 1, latency_ms=0.5),
        agent("agt_other", "reader", last_seen=now, latency_ms=1.0, skills=[
            {"id": "lookup", "name": "Look up", "description": "", "tags": ["search"]},
        ]),
    ]  # fmt: skip
    for row in rows:
        store.save_agent(row)
    registry = Registry(store, Settings(agent_ttl_s=ttl), clock=lambda: now)
    expected = ["agt_fast", "agt_slow", "agt_unmeasured", "agt_stale", "agt_offline"]
    assert [item.id for item in registry.candidates(agent="writer")] == expected
    assert [item.state for item in registry.candidates(agent="writer")][-2:] == ["stale", "offline"]
    assert [item.id for item in registry.candidates(skill="summarise")] == expected  # by skill id
    assert [item.id for item in registry.candidates(skill="text")] == expected  # by tag
    assert [item.id for item in registry.candidates(skill="Look up")] == ["agt_other"]  # by skill name
    assert [item.id for item in registry.candidates(skill="search")] == ["agt_other"]
    assert registry.candidates(agent="reader", skill="summarise") == []
    assert registry.candidates(agent="nobody") == []
    registry.record_call("agt_offline", 2.0, ok=True)  # an answered call is contact
    found = registry.get("agt_offline")
    assert found is not None and (found.state, found.latency_ms) == ("healthy", 2.0)
    registry.record_call("agt_slow", 1.0, ok=False)  # a failed one measures nothing
    slow = registry.get("agt_slow")
    assert slow is not None and slow.latency_ms == 90.0
