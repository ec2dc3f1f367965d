"""The store contract (store/base.py): the in-memory reference, SQLite and Postgres behave the same.

Every test but the migration and Protocol checks at the end runs once per backend, through the
Protocol's methods only. Writes that the contract queues (`record`, `queue_*`) are awaited with
`flush` before they are read, as the engine does.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agentflow.engine import events as ev
from agentflow.store import base, migrations, postgres_schema
from agentflow.store.base import (
    ASSISTANT,
    ConfigVersion,
    CostRow,
    DailyCost,
    Message,
    NodeRunRecord,
    Session,
    Store,
    ThreadRows,
    TraceState,
)
from agentflow.store.memory import InMemoryStore
from agentflow.store.postgres import PostgresStore
from agentflow.store.postgres import migrate as migrate_postgres
from agentflow.store.sqlite import SQLiteStore
from tests.unit.store_contract_cases import (
    R2_AT,
    R3_AT,
    T0,
    ZONE,
    assistant_call,
    fill_ledger,
    new_run,
    race,
    record,
    tally_graph,
)

# Text a database cannot keep as it is (an unpaired surrogate; NUL, which Postgres text cannot hold)
# must not make a write fail: it comes back valid UTF-8 and readable, the surrogate as U+FFFD (today
# one per byte of its UTF-8 form: three), NUL kept (SQLite, memory) or as U+FFFD (Postgres).
ODD_TEXT = "bad \ud800 and \x00 end"


def kept(stored: str | None) -> bool:
    """Whether ODD_TEXT came back readable."""
    return stored is not None and re.fullmatch("bad \ufffd+ and [\x00\ufffd] end", stored) is not None


@pytest.fixture
def local_zone() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", ZONE)
        time.tzset()
        yield ZONE
    time.tzset()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path, local_zone: str) -> Iterator[Store]:
    instance: Store
    if request.param == "memory":
        instance = InMemoryStore()
    elif request.param == "sqlite":
        instance = SQLiteStore(tmp_path / "store.db")
    else:
        instance = PostgresStore(request.getfixturevalue("postgres_url"), queue=False)
    yield instance
    instance.close()


def test_the_location_names_the_store(store: Store) -> None:
    assert isinstance(store.location, str)
    assert store.location


# -- workflows ---------------------------------------------------------------------------


def test_saving_the_same_source_again_keeps_its_version(store: Store) -> None:
    first = store.save_workflow("wf", "steps: 1\n", path="/flows/wf.yaml")
    again = store.save_workflow("wf", "steps: 1\n")
    assert first.version == again.version == hashlib.sha256(b"steps: 1\n").hexdigest()[:12]
    assert again == first
    assert [version.version for version in store.list_versions("wf")] == [first.version]
    assert store.version_counts() == {"wf": 1}


def test_the_latest_saved_version_is_current(store: Store) -> None:
    one = store.save_workflow("wf", "steps: 1\n")
    two = store.save_workflow("wf", "steps: 2\n")
    other = store.save_workflow("other", "steps: 9\n")
    assert store.get_workflow("wf") == two
    assert store.save_workflow("wf", "steps: 1\n") == one  # saving an old source again makes it current
    assert store.get_workflow("wf") == one
    assert store.get_workflow("wf", two.version) == two
    assert [version.version for version in store.list_versions("wf")] == [two.version, one.version]
    assert [(version.name, version.version) for version in store.list_workflows()] == [
        ("wf", one.version),
        ("other", other.version),
    ]
    assert store.version_counts() == {"wf": 2, "other": 1}


def test_unknown_workflows_are_none(store: Store) -> None:
    store.save_workflow("wf", "steps: 1\n")
    assert store.get_workflow("nope") is None
    assert store.get_workflow("wf", "0123456789ab") is None
    assert store.list_versions("nope") == []


def test_versions_are_numbered_per_workflow_in_the_order_first_saved(store: Store) -> None:
    one = store.save_workflow("wf", "steps: 1\n")
    two = store.save_workflow("wf", "steps: 2\n")
    other = store.save_workflow("other", "steps: 1\n")
    assert (one.number, two.number, other.number) == (1, 2, 1)
    assert store.save_workflow("wf", "steps: 1\n").number == 1  # its text again: the same version, no new number
    three = store.save_workflow("wf", "steps: 3\n")
    assert three.number == 3
    assert [version.number for version in store.list_versions("wf")] == [3, 2, 1]
    assert store.get_workflow("wf", two.version) == two
    assert [(version.name, version.number) for version in store.list_workflows()] == [("wf", 3), ("other", 1)]


def test_concurrent_saves_of_one_workflow_get_distinct_numbers(store: Store) -> None:
    saved = race(*(lambda index=index: store.save_workflow("wf", f"steps: {index}\n") for index in range(8)))
    assert sorted(version.number for version in saved) == list(range(1, 9))
    assert sorted(version.number for version in store.list_versions("wf")) == list(range(1, 9))


# -- runs ----------------------------------------------------------------------------------


def test_a_run_comes_back_as_it_was_created(store: Store) -> None:
    inputs = {"text": "héllo ✓ 你好", "odd": "\ud800\x00", "nested": {"list": [1, 2.5, None, True]}}
    run = new_run(store, "run-1", inputs=inputs, trigger="webhook", error=ODD_TEXT, steps=2)
    stored = store.get_run("run-1")
    assert stored is not None
    assert kept(stored.error)
    stored.error = run.error
    assert stored == run
    assert store.get_run("nope") is None


def test_a_runs_parent_limits_and_overrides_come_back(store: Store) -> None:
    overrides = {
        "replay": {"run_id": "run-0", "node_id": "draft", "state": {"results": {"plan": {"text": "é"}}}},
        "pinned": {"fetch": [1, 2]},
        "variants": {"draft": "short"},
    }
    run = new_run(store, "run-1", parent={"run_id": "p", "node_id": "n"}, limits={"usd": 0.5}, overrides=overrides)
    assert store.get_run("run-1") == run
    assert new_run(store, "run-2").overrides is None and store.get_run("run-2").overrides is None  # type: ignore[union-attr]


def test_a_run_without_a_creation_time_gets_one(store: Store) -> None:
    new_run(store, "run-1", created_at=0.0)
    stored = store.get_run("run-1")
    assert stored is not None and stored.created_at > 0


def test_records_are_copies(store: Store) -> None:
    run = new_run(store, "run-1", inputs={"items": [1]})
    run.inputs["items"].append(2)
    stored = store.get_run("run-1")
    assert stored is not None
    stored.inputs["items"].append(3)
    stored.status = "failed"
    again = store.get_run("run-1")
    assert again is not None
    assert (again.inputs, again.status) == ({"items": [1]}, "queued")


def test_find_run_matches_a_literal_prefix(store: Store) -> None:
    for run_id in ("abc-1", "abc-2", "abd-1", "a%c-1", "a_c-1", "a\\c-1", "axc-1"):
        new_run(store, run_id)
    assert sorted(run.id for run in store.find_run("abc")) == ["abc-1", "abc-2"]
    assert [run.id for run in store.find_run("a%")] == ["a%c-1"]
    assert [run.id for run in store.find_run("a_")] == ["a_c-1"]
    assert [run.id for run in store.find_run("a\\")] == ["a\\c-1"]
    assert store.find_run("zzz") == []
    found = [run.id for run in store.find_run("a")]
    assert len(found) == 5 and len(set(found)) == 5  # at most five


def test_find_run_is_case_sensitive(store: Store) -> None:
    new_run(store, "abc-1")
    assert store.find_run("ABC") == []


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    new_run(store, "r1", workflow="a", created_at=T0 + 1)
    new_run(store, "r2", workflow="b", created_at=T0 + 2, status="running")
    new_run(store, "r3", workflow="a", created_at=T0 + 3, status="succeeded")
    new_run(store, "r4", workflow="b", created_at=T0 + 4)

    def ids(**filters: Any) -> list[str]:
        return [run.id for run in store.list_runs(**filters)]

    assert ids() == ["r4", "r3", "r2", "r1"]
    assert ids(limit=2) == ["r4", "r3"]
    assert ids(statuses=("queued", "running")) == ["r4", "r2", "r1"]
    assert ids(workflow="a") == ["r3", "r1"]
    assert ids(workflow="b", statuses=("queued",)) == ["r4"]
    assert ids(workflow="c") == []


def test_a_run_is_claimed_exactly_once(store: Store) -> None:
    new_run(store, "run-1")
    won = race(*(lambda owner=owner: store.claim_run("run-1", owner, statuses=("queued",)) for owner in ("a", "b")))
    assert sorted(won) == [False, True]
    winner = "a" if won[0] else "b"
    run = store.get_run("run-1")
    assert run is not None
    assert (run.status, run.owner, run.executed_by) == ("running", winner, winner)
    assert run.heartbeat_at is not None and run.started_at is not None
    assert not store.claim_run("run-1", "c", statuses=("queued",))
    assert not store.claim_run("nope", "c", statuses=("queued",))


def test_claiming_keeps_the_first_start(store: Store) -> None:
    new_run(store, "run-1", status="waiting_approval", started_at=T0 + 1)
    assert store.claim_run("run-1", "me", statuses=("queued", "waiting_approval"))
    run = store.get_run("run-1")
    assert run is not None and run.started_at == T0 + 1


def test_claiming_with_no_statuses_claims_nothing(store: Store) -> None:
    new_run(store, "run-1")
    assert not store.claim_run("run-1", "me", statuses=())


def test_a_run_is_taken_over_only_from_its_previous_owner(store: Store) -> None:
    new_run(store, "run-1", status="running", owner="dead")
    new_run(store, "run-2", status="running")
    new_run(store, "run-3")
    assert not store.take_over_run("run-1", "me", previous_owner="alive")
    assert not store.take_over_run("run-1", "me", previous_owner=None)
    assert store.take_over_run("run-1", "me", previous_owner="dead")
    assert not store.take_over_run("run-1", "you", previous_owner="dead")
    run = store.get_run("run-1")
    assert run is not None and (run.owner, run.executed_by) == ("me", "me")
    assert store.take_over_run("run-2", "me", previous_owner=None)
    assert not store.take_over_run("run-3", "me", previous_owner=None)  # not running


def test_update_run_rejects_unknown_fields(store: Store) -> None:
    new_run(store, "run-1")
    with pytest.raises(ValueError, match="colour"):
        store.update_run("run-1", colour="blue")
    store.update_run("run-1", status="running", cancel_requested=True, outputs={"a": [1]}, error=ODD_TEXT)
    run = store.get_run("run-1")
    assert run is not None
    assert (run.status, run.cancel_requested, run.outputs) == ("running", True, {"a": [1]})
    assert kept(run.error)


def test_heartbeat_returns_the_runs_another_owner_took(store: Store) -> None:
    new_run(store, "mine", status="running", owner="me", heartbeat_at=T0)
    new_run(store, "theirs", status="running", owner="them", heartbeat_at=T0)
    new_run(store, "nobodys", status="running", heartbeat_at=T0)
    # Released runs (no owner: waiting or finished) and unknown ones are not taken: only "theirs" is.
    assert store.heartbeat(["mine", "theirs", "missing", "nobodys"], "me") == ["theirs"]
    mine, theirs = store.get_run("mine"), store.get_run("theirs")
    assert mine is not None and theirs is not None
    assert mine.heartbeat_at != T0
    assert theirs.heartbeat_at == T0
    assert store.heartbeat([], "me") == []


def test_cancelling_a_waiting_run_cancels_it_and_its_approval(store: Store) -> None:
    new_run(store, "run-1", status="running", owner="me")
    record(store, ev.ApprovalRequested(run_id="run-1", node_id="gate", message="ok?", at=T0 + 1))
    pending = store.pending_approval("run-1")
    assert pending is not None
    assert store.request_cancel("run-1")
    run = store.get_run("run-1")
    assert run is not None
    assert (run.status, run.error) == ("cancelled", "cancelled by request")
    assert run.finished_at is not None
    assert store.pending_approval("run-1") is None
    cancelled = store.approval(pending.id)
    assert cancelled is not None
    assert cancelled.status == "cancelled" and cancelled.decided_at is not None
    assert store.decide_approval("run-1", approved=True, comment=None) is None


def test_cancelling_a_queued_run_cancels_it_at_once(store: Store) -> None:
    new_run(store, "run-1")
    assert store.request_cancel("run-1")
    run = store.get_run("run-1")
    assert run is not None and run.status == "cancelled" and not run.cancel_requested
    # Its event log ends as any finished run's does: whoever follows the run sees it end.
    (finished,) = store.events("run-1")
    assert (finished["type"], finished["status"], finished["error"]) == ("run_finished", "cancelled", run.error)


def test_cancelling_a_running_run_asks_its_owner(store: Store) -> None:
    new_run(store, "run-1", status="running", owner="me")
    new_run(store, "run-2", status="running", owner="me")
    assert store.request_cancel("run-1")
    run = store.get_run("run-1")
    assert run is not None and (run.status, run.cancel_requested) == ("running", True)
    assert store.cancel_requests("me") == ["run-1"]
    assert store.cancel_requests("you") == []


def test_a_finished_run_cannot_be_cancelled(store: Store) -> None:
    new_run(store, "run-1", status="succeeded", finished_at=T0)
    assert not store.request_cancel("run-1")
    assert not store.request_cancel("nope")
    run = store.get_run("run-1")
    assert run is not None and (run.status, run.cancel_requested) == ("succeeded", False)


# -- the event stream ------------------------------------------------------------------------


def test_run_started_marks_the_run_running(store: Store) -> None:
    new_run(store, "run-1")
    record(store, ev.RunStarted(run_id="run-1", workflow="wf", version="v1", at=T0 + 1))
    record(store, ev.RunStarted(run_id="run-1", workflow="wf", version="v1", resumed=True, at=T0 + 5))
    run = store.get_run("run-1")
    assert run is not None and (run.status, run.started_at) == ("running", T0 + 1)


def test_finished_nodes_become_node_runs_and_steps(store: Store) -> None:
    new_run(store, "run-1")
    record(
        store,
        ev.NodeFinished(run_id="run-1", node_id="plan", node_type="llm", status="succeeded", started_at=T0 + 1,
                        latency_ms=900.0, model="m", tokens=5, cost_usd=0.5, at=T0 + 2),
        ev.NodeFinished(run_id="run-1", node_id="later", node_type="transform", status="skipped", started_at=T0 + 3,
                        at=T0 + 3),
        ev.NodeFinished(run_id="run-1", node_id="each", node_type="map", status="succeeded", started_at=T0 + 0.5,
                        at=T0 + 6),
        ev.NodeFinished(run_id="run-1", node_id="fetch", node_type="tool", status="failed", attempt=2, iteration=1,
                        item_index=0, started_at=T0 + 4, at=T0 + 5, error=ODD_TEXT),
    )  # fmt: skip
    node_runs = store.node_runs("run-1")
    assert [node_run.node_id for node_run in node_runs] == ["each", "plan", "later", "fetch"]
    assert node_runs[1] == NodeRunRecord(
        "run-1", "plan", "llm", "succeeded", 1, 0, None, T0 + 1, T0 + 2, 900.0, "m", 5, 0.5, None
    )
    failed = node_runs[3]
    assert (failed.attempt, failed.iteration, failed.item_index) == (2, 1, 0)
    assert kept(failed.error)
    run = store.get_run("run-1")
    assert run is not None and run.steps == 2  # neither the skipped node nor the map's fan-in
    assert store.node_runs("nope") == []


def test_a_provider_call_adds_to_the_run_and_the_ledger(store: Store) -> None:
    new_run(store, "run-1", workflow="alpha")
    record(
        store,
        ev.LLMCalled(run_id="run-1", node_id="plan", model="m", provider="p", input_tokens=10, output_tokens=2,
                     cost_usd=0.25, latency_ms=5.0, at=T0),
        ev.LLMCalled(run_id="run-1", node_id="plan", model="m", provider="p", input_tokens=20, output_tokens=4,
                     cost_usd=0.5, latency_ms=5.0, error=ODD_TEXT, at=T0 + 1),
        ev.LLMCalled(run_id="ghost", node_id="plan", model="m", provider="p", input_tokens=1, output_tokens=1,
                     cost_usd=0.125, latency_ms=5.0, at=T0 + 2),
    )  # fmt: skip
    run = store.get_run("run-1")
    assert run is not None and (run.tokens, run.cost_usd) == (36, 0.75)
    # A call of a run the store does not know is still spent, by an unknown workflow.
    assert store.spend(by="workflow", since=0) == [CostRow("alpha", 2, 30, 6, 0.75), CostRow("?", 1, 1, 1, 0.125)]
    assert store.spent_by_workflow(since=0) == {"alpha": 0.75, "": 0.125}


def test_an_approval_is_decided_exactly_once(store: Store) -> None:
    new_run(store, "run-1")
    assert store.claim_run("run-1", "me", statuses=("queued",))
    record(store, ev.ApprovalRequested(run_id="run-1", node_id="gate", message=ODD_TEXT, at=T0 + 1))
    pending = store.pending_approval("run-1")
    assert pending is not None
    assert (pending.run_id, pending.node_id, pending.status) == ("run-1", "gate", "pending")
    assert (pending.comment, pending.requested_at, pending.decided_at) == (None, T0 + 1, None)
    assert kept(pending.message)
    run = store.get_run("run-1")
    assert run is not None and (run.status, run.owner) == ("waiting_approval", None)
    assert store.decided_approval("run-1") is None

    decisions = race(*(lambda: store.decide_approval("run-1", approved=False, comment="no") for _ in range(2)))
    [decided] = [decision for decision in decisions if decision is not None]
    assert (decided.id, decided.status, decided.comment) == (pending.id, "rejected", "no")
    assert decided.decided_at is not None
    assert store.decide_approval("run-1", approved=True, comment=None) is None
    assert store.pending_approval("run-1") is None
    run = store.get_run("run-1")
    assert run is not None and run.status == "queued"

    assert store.decided_approval("run-1") == decided
    store.consume_approval(decided.id)
    assert store.decided_approval("run-1") is None
    assert store.approval(decided.id) == decided
    assert store.approval(decided.id + 100) is None


def test_a_decision_names_its_approval_and_its_person(store: Store) -> None:
    new_run(store, "run-1")
    assert store.claim_run("run-1", "me", statuses=("queued",))
    record(store, ev.ApprovalRequested(run_id="run-1", node_id="gate", message="ok?", at=T0 + 1))
    pending = store.pending_approval("run-1")
    assert pending is not None and pending.decided_by is None
    # A button for another (an earlier) approval of the run decides nothing.
    assert store.decide_approval("run-1", approved=True, comment=None, approval_id=pending.id + 7) is None
    assert store.pending_approval("run-1") == pending
    decided = store.decide_approval(
        "run-1", approved=True, comment=None, approval_id=pending.id, decided_by="telegram:" + ODD_TEXT
    )
    assert decided is not None and decided.status == "approved"
    assert decided.decided_by is not None and kept(decided.decided_by.removeprefix("telegram:"))
    assert store.decide_approval("run-1", approved=False, comment=None, approval_id=pending.id) is None


def test_approval_decided_consumes_the_decision_of_its_node(store: Store) -> None:
    new_run(store, "run-1", status="running")
    record(store, ev.ApprovalRequested(run_id="run-1", node_id="gate", message="ok?", at=T0))
    first = store.decide_approval("run-1", approved=True, comment="yes")
    assert first is not None
    record(store, ev.ApprovalDecided(run_id="run-1", node_id="other", approved=True, at=T0 + 1))
    assert store.decided_approval("run-1") == first
    record(store, ev.ApprovalDecided(run_id="run-1", node_id="gate", approved=True, at=T0 + 2))
    assert store.decided_approval("run-1") is None
    # The run asks again later: a new approval, decided and consumed on its own.
    record(store, ev.ApprovalRequested(run_id="run-1", node_id="gate", message="again?", at=T0 + 3))
    second = store.pending_approval("run-1")
    assert second is not None and second.id > first.id
    assert store.decide_approval("run-1", approved=True, comment=None) is not None
    assert store.decided_approval("run-1") is not None


def test_run_finished_records_the_outcome_and_releases_the_run(store: Store) -> None:
    new_run(store, "run-1")
    assert store.claim_run("run-1", "me", statuses=("queued",))
    record(store, ev.RunFinished(run_id="run-1", status="failed", outputs={"partial": [1]}, error=ODD_TEXT, at=T0 + 9))
    run = store.get_run("run-1")
    assert run is not None
    assert (run.status, run.outputs, run.finished_at, run.owner) == ("failed", {"partial": [1]}, T0 + 9, None)
    assert kept(run.error)
    assert run.executed_by == "me"


def test_events_come_back_in_order_after_an_id(store: Store) -> None:
    new_run(store, "run-1")
    new_run(store, "run-2")
    record(
        store,
        ev.RunStarted(run_id="run-1", workflow="wf", version="v1", at=T0),
        ev.RunStarted(run_id="run-2", workflow="wf", version="v1", at=T0),
        ev.NodeFinished(run_id="run-1", node_id="n", node_type="transform", status="succeeded",
                        output={"path": Path("/tmp/x"), "pair": (1, 2)}, at=T0 + 1),
        ev.RunFinished(run_id="run-1", status="succeeded", at=T0 + 2),
    )  # fmt: skip
    events = store.events("run-1")
    assert [event["type"] for event in events] == ["run_started", "node_finished", "run_finished"]
    ids = [event["id"] for event in events]
    assert ids[0] == 1 and ids == sorted(ids) and len(set(ids)) == 3
    assert events[0] == {
        "id": 1, "type": "run_started", "run_id": "run-1", "at": T0, "workflow": "wf", "version": "v1",
        "resumed": False, "replay_of": None,
    }  # fmt: skip
    assert events[1]["output"] == {"path": "/tmp/x", "pair": [1, 2]}  # as JSON keeps them
    assert store.events("run-1", after=ids[0]) == events[1:]
    assert store.events("run-1", after=ids[-1]) == []
    assert [event["type"] for event in store.events("run-2")] == ["run_started"]
    assert store.events("nope") == []


def test_every_runs_events_come_back_after_an_id_for_the_live_feed(store: Store) -> None:
    assert store.last_event_id() == 0
    assert store.events_after(0) == []
    new_run(store, "run-1")
    new_run(store, "run-2")
    record(
        store,
        ev.RunStarted(run_id="run-1", workflow="wf", version="v1", at=T0),
        ev.RunStarted(run_id="run-2", workflow="wf", version="v1", at=T0),
        ev.RunFinished(run_id="run-1", status="succeeded", at=T0 + 2),
    )
    every = store.events_after(0)
    assert [(event["run_id"], event["type"]) for event in every] == [
        ("run-1", "run_started"), ("run-2", "run_started"), ("run-1", "run_finished"),
    ]  # fmt: skip
    assert store.last_event_id() == every[-1]["id"]
    assert store.events_after(every[0]["id"]) == every[1:]
    assert store.events_after(0, limit=2) == every[:2]
    assert store.events_after(every[-1]["id"]) == []
    assert every[0] == store.events("run-1")[0]


# -- grants --------------------------------------------------------------------------------------


def test_the_newest_grant_is_in_force(store: Store) -> None:
    first = store.record_grant("wf", None, {"network": ["api.example.com"]}, granted_by="ann", note="first")
    second = store.record_grant("wf", "abc", {"network": [], "files": ["/tmp"]}, granted_by="bob", note=ODD_TEXT)
    store.record_grant("other", None, {}, granted_by="ann", note="")
    assert second.id > first.id
    latest = store.latest_grant("wf")
    assert latest is not None
    assert (latest.id, latest.version, latest.capabilities, latest.granted_by) == (
        second.id, "abc", {"network": [], "files": ["/tmp"]}, "bob"
    )  # fmt: skip
    assert kept(latest.note)
    assert [grant.id for grant in store.list_grants("wf")] == [second.id, first.id]
    assert store.list_grants("wf")[1] == first
    assert store.latest_grant("nope") is None
    assert store.list_grants("nope") == []


# -- chat ------------------------------------------------------------------------------------------


def session(session_id: str, channel: str = "web", *, updated_at: float = T0, title: str | None = None) -> Session:
    return Session(session_id, channel, title, None, 0, T0, updated_at)


def test_sessions_are_created_once_and_listed_by_recency(store: Store) -> None:
    assert store.create_session(session("s1", title="first", updated_at=T0 + 1)) == session(
        "s1", title="first", updated_at=T0 + 1
    )
    assert store.create_session(session("s1", title="changed")).title == "first"
    store.create_session(session("s2", "cli", updated_at=T0 + 3))
    store.create_session(session("s3", updated_at=T0 + 2))
    assert [one.id for one in store.list_sessions()] == ["s2", "s3", "s1"]
    assert [one.id for one in store.list_sessions(channel="web")] == ["s3", "s1"]
    assert [one.id for one in store.list_sessions(limit=1)] == ["s2"]
    assert store.get_session("nope") is None


def test_update_session_changes_known_fields_only(store: Store) -> None:
    store.create_session(session("s1"))
    store.update_session("s1", title="renamed", model="m", updated_at=T0 + 5)
    updated = store.get_session("s1")
    assert updated is not None and (updated.title, updated.model, updated.updated_at) == ("renamed", "m", T0 + 5)
    store.update_session("s1", current_version=3)
    bumped = store.get_session("s1")
    assert bumped is not None and bumped.current_version == 3 and bumped.updated_at != T0 + 5  # now
    with pytest.raises(ValueError, match="channel"):
        store.update_session("s1", channel="cli")


def test_messages_come_back_oldest_first_the_last_n(store: Store) -> None:
    store.create_session(session("s1"))
    for number in range(5):
        store.add_message("s1", Message("user" if number % 2 == 0 else "assistant", f"m{number}", {"n": number},
                                        T0 + number))  # fmt: skip
    store.add_message("s2", Message("user", ODD_TEXT, created_at=T0))
    assert [message.content for message in store.messages("s1", limit=3)] == ["m2", "m3", "m4"]
    assert store.messages("s1")[0] == Message("user", "m0", {"n": 0}, T0)
    assert store.messages("s1", limit=0) == []
    [odd] = store.messages("s2")
    assert kept(odd.content)
    store.flush_sync()
    bumped = store.get_session("s1")
    assert bumped is not None and bumped.updated_at == T0 + 4  # the last message's time


def test_config_versions_are_numbered_per_session(store: Store) -> None:
    store.create_session(session("s1"))
    seen: list[int] = []

    def diff(number: int) -> str:
        seen.append(number)
        return f"diff {number}"

    def add(session_id: str, parent: int, source: str) -> int:
        return store.add_config_version(
            session_id, parent=parent, source=source, diff=diff, author="assistant", note=f"from {parent}"
        )

    assert [add("s1", 0, "v1"), add("s1", 1, "v2"), add("s1", 1, "v3"), add("s2", 0, "other")] == [1, 2, 3, 1]
    assert seen == [1, 2, 3, 1]
    current = store.get_session("s1")
    assert current is not None and current.current_version == 3
    assert [version.number for version in store.config_versions("s1")] == [1, 2, 3]
    second = store.config_version("s1", 2)
    assert second is not None
    assert (second.parent, second.source, second.diff, second.author, second.note) == (
        1, "v2", "diff 2", "assistant", "from 1"
    )  # fmt: skip
    newest = store.newest_child("s1", 1)
    assert isinstance(newest, ConfigVersion) and newest.number == 3
    assert store.newest_child("s1", 3) is None
    assert store.config_version("s1", 9) is None
    assert store.config_versions("nope") == []


# -- the ledger -------------------------------------------------------------------------------------


@pytest.fixture
def ledger(store: Store) -> Store:
    fill_ledger(store)
    return store


SPEND = {
    "day": [  # the latest local day first
        CostRow("2026-03-03", 2, 310, 31, 0.25),
        CostRow("2026-03-02", 1, 50, 5, 0.125),
        CostRow("2026-03-01", 2, 300, 30, 0.75),
    ],
    "model": [
        CostRow("openai/gpt", 2, 150, 15, 0.625),
        CostRow("anthropic/claude", 2, 500, 50, 0.5),
        CostRow("local/llama", 1, 10, 1, 0.0),
    ],
    "provider": [
        CostRow("openai", 2, 150, 15, 0.625),
        CostRow("anthropic", 2, 500, 50, 0.5),
        CostRow("?", 1, 10, 1, 0.0),
    ],
    "workflow": [CostRow("alpha", 4, 610, 61, 1.0), CostRow("beta", 1, 50, 5, 0.125)],
    "node": [  # equal costs: by key
        CostRow("alpha.plan", 2, 110, 11, 0.5),
        CostRow("alpha.write", 2, 500, 50, 0.5),
        CostRow("beta.plan", 1, 50, 5, 0.125),
    ],
}


@pytest.mark.parametrize("group", sorted(SPEND))
def test_spend_by_group(ledger: Store, group: str) -> None:
    assert ledger.spend(by=group, since=0) == SPEND[group]


def test_spend_since(ledger: Store) -> None:
    assert ledger.spend(by="model", since=R2_AT) == [
        CostRow("anthropic/claude", 1, 300, 30, 0.25),
        CostRow("openai/gpt", 1, 50, 5, 0.125),
        CostRow("local/llama", 1, 10, 1, 0.0),
    ]
    assert ledger.spend(by="day", since=R3_AT + 3600) == []
    with pytest.raises(ValueError, match="colour"):
        ledger.spend(by="colour", since=0)


def test_spent(ledger: Store) -> None:
    assert ledger.spent(since=0) == 1.125
    assert ledger.spent(since=R2_AT) == 0.375
    assert ledger.spent(since=0, workflow="beta") == 0.125
    assert ledger.spent(since=0, workflow="gamma") == 0.0
    assert ledger.spent_by_workflow(since=0) == {"alpha": 1.0, "beta": 0.125}
    assert ledger.spent_by_workflow(since=R3_AT) == {"alpha": 0.25}


def test_node_costs(ledger: Store) -> None:
    assert ledger.node_costs(["r1", "r2"]) == {"plan": 0.625, "write": 0.25}
    assert ledger.node_costs(["r3", "nope"]) == {"plan": 0.0, "write": 0.25}
    assert ledger.node_costs([]) == {}


def test_the_assistants_calls_are_in_the_ledger_marked_as_theirs(ledger: Store) -> None:
    runs_before = sorted((run.id, run.tokens, run.cost_usd) for run in ledger.list_runs())
    ledger.record_assistant_call(assistant_call("s1", (40, 4), 0.0625, R3_AT + 120))
    ledger.record_assistant_call(assistant_call("s2", (8, 2), 0.0, R3_AT + 180, error=ODD_TEXT))
    ledger.flush_sync()
    assert ledger.spend(by="source", since=0) == [
        CostRow("run", 5, 660, 66, 1.125),
        CostRow("assistant", 2, 48, 6, 0.0625),
    ]
    assert ledger.spend(by="session", since=0) == [
        CostRow("?", 5, 660, 66, 1.125),
        CostRow("s1", 1, 40, 4, 0.0625),
        CostRow("s2", 1, 8, 2, 0.0),
    ]
    # No run, no workflow: a line of their own wherever workflows or nodes are the groups.
    assert ledger.spend(by="workflow", since=0) == [*SPEND["workflow"], CostRow(ASSISTANT, 2, 48, 6, 0.0625)]
    assert ledger.spend(by="node", since=0) == [*SPEND["node"], CostRow(ASSISTANT, 2, 48, 6, 0.0625)]
    assert ledger.spend(by="day", since=0)[0] == CostRow("2026-03-03", 4, 358, 37, 0.3125)
    assert ledger.spend(by="model", since=0)[0] == CostRow("openai/gpt", 4, 198, 21, 0.6875)
    # Spent today counts them (the global daily budget does); no workflow's budget and no run does.
    assert ledger.spent(since=0) == 1.1875
    assert ledger.spent(since=0, workflow="alpha") == 1.0
    assert ledger.spent_by_workflow(since=0) == {"alpha": 1.0, "beta": 0.125, "": 0.0625}
    assert ledger.node_costs(["r1", "r2", "r3"]) == {"plan": 0.625, "write": 0.5}
    assert sorted((run.id, run.tokens, run.cost_usd) for run in ledger.list_runs()) == runs_before


def test_daily_spend(ledger: Store) -> None:
    assert ledger.daily_spend(by="workflow", since=0) == [
        DailyCost("2026-03-01", "alpha", 2, 300, 30, 0.75),
        DailyCost("2026-03-02", "beta", 1, 50, 5, 0.125),
        DailyCost("2026-03-03", "alpha", 2, 310, 31, 0.25),
    ]
    assert ledger.daily_spend(by="model", since=R3_AT) == [
        DailyCost("2026-03-03", "anthropic/claude", 1, 300, 30, 0.25),
        DailyCost("2026-03-03", "local/llama", 1, 10, 1, 0.0),
    ]
    ledger.record_assistant_call(assistant_call("s1", (40, 4), 0.0625, R3_AT + 120))
    ledger.flush_sync()
    assert ledger.daily_spend(by="source", since=R3_AT) == [
        DailyCost("2026-03-03", "assistant", 1, 40, 4, 0.0625),
        DailyCost("2026-03-03", "run", 2, 310, 31, 0.25),
    ]
    assert ledger.daily_spend(by="workflow", since=R3_AT + 3600) == []
    with pytest.raises(ValueError, match="use one of model"):
        ledger.daily_spend(by="day", since=0)


def test_run_counts_by_status(store: Store) -> None:
    assert store.run_counts(since=0) == {}
    new_run(store, "a", status="succeeded", created_at=T0)
    new_run(store, "b", status="failed", created_at=T0 + 1)
    new_run(store, "c", status="succeeded", created_at=T0 + 2)
    new_run(store, "d", created_at=T0 + 3)
    assert store.run_counts(since=0) == {"succeeded": 2, "failed": 1, "queued": 1}
    assert store.run_counts(since=T0 + 1) == {"succeeded": 1, "failed": 1, "queued": 1}
    assert store.run_counts(since=T0 + 4) == {}


# -- trace export state --------------------------------------------------------------------------------


def trace(run_id: str, state: str, updated_at: float, *, attempts: int = 1, error: str | None = None) -> TraceState:
    return TraceState(run_id, f"tr-{run_id}" if state == "exported" else None, state, error, attempts, updated_at)


def test_the_backlog_is_finished_runs_not_exported(store: Store) -> None:
    new_run(store, "late", status="succeeded", finished_at=T0 + 3)
    new_run(store, "early", status="failed", finished_at=T0 + 1)
    new_run(store, "exported", status="succeeded", finished_at=T0 + 2)
    new_run(store, "failed", status="succeeded", finished_at=T0 + 4)
    new_run(store, "running", status="running")
    store.record_traces(
        [trace("early", "pending", T0), trace("exported", "exported", T0), trace("failed", "failed", T0)]
    )
    assert store.trace_backlog() == ["early", "late"]


def test_trace_states_are_upserted_counted_and_reset(store: Store) -> None:
    store.record_traces([trace("a", "pending", T0), trace("b", "failed", T0 + 1, error=ODD_TEXT)])
    store.record_traces([trace("a", "exported", T0 + 2, attempts=2), trace("c", "failed", T0 + 3, attempts=3)])
    store.record_traces([])
    assert store.trace_of("a") == trace("a", "exported", T0 + 2, attempts=2)
    assert store.trace_of("nope") is None
    assert store.trace_counts() == {"exported": 1, "failed": 2}
    failures = store.trace_failures()
    assert [state.run_id for state in failures] == ["c", "b"]  # the latest first
    assert kept(failures[1].error)
    assert [state.run_id for state in store.trace_failures(limit=1)] == ["c"]

    assert sorted(store.reset_failed_traces()) == ["b", "c"]
    assert store.trace_of("c") == trace("c", "pending", T0 + 3, attempts=0)
    assert store.trace_counts() == {"exported": 1, "pending": 2}
    assert store.reset_failed_traces() == []


# -- checkpoints ---------------------------------------------------------------------------------------


def test_checkpoint_rows_are_upserted_by_key(store: Store) -> None:
    checkpoint = ("", "c1", None, "msgpack", b"one", "json", b"{}")
    store.queue_checkpoint("run-1", checkpoint, [("", "count", "1", "msgpack", b"\x01")])
    store.queue_checkpoint("run-1", (*checkpoint[:4], b"two", "json", b"{}"), [("", "count", "1", "msgpack", b"\x02")])
    store.queue_checkpoint("run-1", ("", "c2", "c1", "msgpack", b"three", "json", b"{}"), [])
    store.queue_writes("run-1", [("", "c1", "task", 0, "count", "msgpack", b"\x03", "")])
    store.queue_writes("run-1", [("", "c1", "task", 0, "count", "msgpack", b"\x04", "~")])
    store.queue_writes("run-1", [])
    store.queue_checkpoint("run-2", checkpoint, [])
    store.flush_sync()
    rows = store.load_thread("run-1")
    assert sorted(rows.checkpoints) == [
        ("", "c1", None, "msgpack", b"two", "json", b"{}"),
        ("", "c2", "c1", "msgpack", b"three", "json", b"{}"),
    ]
    assert rows.blobs == [("", "count", "1", "msgpack", b"\x02")]
    assert rows.writes == [("", "c1", "task", 0, "count", "msgpack", b"\x04", "~")]

    store.queue_delete_thread("run-1")
    store.flush_sync()
    assert store.load_thread("run-1") == ThreadRows()
    assert store.load_thread("run-2").checkpoints == [checkpoint]


async def test_a_graph_resumes_from_the_store_in_a_new_checkpointer(store: Store) -> None:
    config: Any = {"configurable": {"thread_id": "run-1"}}
    other: Any = {"configurable": {"thread_id": "run-2"}}
    saver = store.checkpointer()
    final = await tally_graph(saver).ainvoke({"count": 3, "trail": []}, config)
    assert final == {"count": 7, "trail": ["double", "increment"]}
    await tally_graph(saver).ainvoke({"count": 1, "trail": []}, other)
    await store.flush()

    # A fresh process: a new checkpointer knows only what the store kept.
    graph = tally_graph(store.checkpointer())
    state = await graph.aget_state(config)
    assert (state.values, state.next) == (final, ())
    history = [snapshot.values async for snapshot in graph.aget_state_history(config)]
    assert history == [snapshot.values async for snapshot in tally_graph(saver).aget_state_history(config)]
    assert len(history) >= 3

    await store.checkpointer().adelete_thread("run-1")
    await store.flush()
    assert store.load_thread("run-1") == ThreadRows()
    assert (await tally_graph(store.checkpointer()).aget_state(config)).values == {}
    assert (await tally_graph(store.checkpointer()).aget_state(other)).values["count"] == 3


def test_watching_changes_gives_a_way_to_stop(store: Store) -> None:
    stop = store.watch_changes(lambda run_id: None)
    stop()


# -- what only the SQL backends have: migrations from an empty database, Postgres's change feed ----------


def test_postgres_announces_changes_to_other_processes(postgres_url: str) -> None:
    writer, watcher = PostgresStore(postgres_url, queue=False), PostgresStore(postgres_url, queue=False)
    heard: list[str] = []
    announced = threading.Event()

    def on_change(run_id: str) -> None:
        heard.append(run_id)
        announced.set()

    stop = watcher.watch_changes(on_change)
    try:
        new_run(writer, "run-1")
        record(writer, ev.RunStarted(run_id="run-1", workflow="wf", version="v1", at=T0))
        assert announced.wait(30)
        assert heard[0] == "run-1"
    finally:
        stop()
        writer.close()
        watcher.close()


SQLITE_STEPS = [name for name, _ in migrations.MIGRATIONS]
POSTGRES_STEPS = [name for name, _ in postgres_schema.MIGRATIONS]


def applied_sqlite(path: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid"))


def test_sqlite_migrates_a_new_file_once(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    applied = applied_sqlite(path)
    assert [name for name, _ in applied] == SQLITE_STEPS
    SQLiteStore(path).close()
    assert applied_sqlite(path) == applied  # the second open applied nothing
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrations.migrate(conn) == []
    conn.close()


def test_sqlite_migrate_returns_the_steps_it_applied(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    assert migrations.migrate(conn) == SQLITE_STEPS
    assert migrations.migrate(conn) == []
    conn.close()


def test_postgres_migrates_an_empty_database_once(empty_postgres_url: str) -> None:
    assert migrate_postgres(empty_postgres_url) == POSTGRES_STEPS
    assert migrate_postgres(empty_postgres_url) == []


def test_concurrent_postgres_migrations_apply_each_step_once(empty_postgres_url: str) -> None:
    applied = race(*(lambda: migrate_postgres(empty_postgres_url) for _ in range(4)))
    assert sorted(name for names in applied for name in names) == sorted(POSTGRES_STEPS)
    with psycopg.connect(empty_postgres_url) as conn:
        rows = conn.execute("SELECT name FROM _migrations").fetchall()
    assert sorted(name for (name,) in rows) == sorted(POSTGRES_STEPS)


OLD_VERSIONS = [
    ("wf", "bbbbbbbbbbbb", 2.0), ("wf", "aaaaaaaaaaaa", 1.0), ("wf", "cccccccccccc", 2.0), ("other", "z", 5.0),
]  # fmt: skip
NUMBERED = [("other", "z", 1), ("wf", "aaaaaaaaaaaa", 1), ("wf", "bbbbbbbbbbbb", 2), ("wf", "cccccccccccc", 3)]


def test_sqlite_numbers_the_versions_saved_before_numbers_existed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = SQLITE_STEPS.index("m007_version_numbers")
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:before])
    migrations.migrate(conn)
    conn.executemany(
        "INSERT INTO workflow_versions (name, version, source, created_at) VALUES (?, ?, 'x', ?)", OLD_VERSIONS
    )
    monkeypatch.undo()
    assert migrations.migrate(conn) == SQLITE_STEPS[before:]
    # Oldest first; versions saved at the same moment in the order of their ids.
    assert conn.execute("SELECT name, version, number FROM workflow_versions ORDER BY 1, 3").fetchall() == NUMBERED
    conn.close()


def test_postgres_numbers_the_versions_saved_before_numbers_existed(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentflow.store import postgres

    before = POSTGRES_STEPS.index("m007_version_numbers")
    monkeypatch.setattr(postgres, "MIGRATIONS", postgres_schema.MIGRATIONS[:before])
    migrate_postgres(empty_postgres_url)
    with psycopg.connect(empty_postgres_url, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO workflow_versions (name, version, source, created_at) VALUES (%s, %s, 'x', %s)", OLD_VERSIONS
        )
    monkeypatch.undo()
    assert migrate_postgres(empty_postgres_url) == POSTGRES_STEPS[before:]
    with psycopg.connect(empty_postgres_url) as conn:
        rows = conn.execute("SELECT name, version, number FROM workflow_versions ORDER BY 1, 3").fetchall()
    assert rows == NUMBERED


def test_postgres_numbers_two_processes_saving_one_workflow_in_turn(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url, queue=False), PostgresStore(postgres_url, queue=False)
    try:
        stores = (first, second)
        saved = race(*(lambda index=index: stores[index % 2].save_workflow("wf", f"{index}\n") for index in range(10)))
        assert sorted(version.number for version in saved) == list(range(1, 11))
    finally:
        first.close()
        second.close()


def test_both_databases_name_the_same_steps() -> None:
    assert [name for name in POSTGRES_STEPS if name != "q001_queue"] == SQLITE_STEPS
    assert "q001_queue" in POSTGRES_STEPS


# -- the Protocols -----------------------------------------------------------------------------------------

ROLES = [role for role in Store.__mro__ if role.__module__ == base.__name__]


def shape(method: Any) -> tuple[list[tuple[str, Any, Any]], bool]:
    """Parameter names, kinds and defaults (without self), and whether it is a coroutine function."""
    parameters = list(inspect.signature(method).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in parameters], inspect.iscoroutinefunction(method)


def test_the_roles_are_found() -> None:
    names = {role.__name__ for role in ROLES}
    assert {"WorkflowStore", "RunStore", "LedgerStore", "CheckpointStore", "Durability", "Store"} <= names


@pytest.mark.parametrize("implementation", [InMemoryStore, SQLiteStore, PostgresStore])
def test_every_method_of_every_role_is_implemented(implementation: type) -> None:
    problems = []
    for role in ROLES:
        for name, declared in vars(role).items():
            if name.startswith("_") or not callable(declared):
                continue
            made = getattr(implementation, name, None)
            if made is None:
                problems.append(f"{role.__name__}.{name} is missing")
            elif shape(made) != shape(declared):
                problems.append(f"{role.__name__}.{name}: {shape(made)} is not {shape(declared)}")
    assert problems == []


# -- triggers ----------------------------------------------------------------------------


def triggered(run_id: str, key: str, *, scope: str = "webhook:wf:hook", **fields: Any) -> base.TriggeredRun:
    run = base.RunRecord(id=run_id, workflow="wf", version="v1", trigger="webhook", **fields)
    delivery = base.Delivery(workflow="wf", trigger="hook", channel="webhook", outcome="accepted", key=key)
    return base.TriggeredRun(run=run, scope=scope, key=key, delivery=delivery)


def test_deployments_are_a_history_whose_newest_is_in_force(store: Store) -> None:
    assert store.current_deployment("wf") is None and store.deployments() == []
    first = store.record_deployment("wf", "aaa", action="deploy", by="cli:" + ODD_TEXT)
    second = store.record_deployment("wf", "bbb", action="deploy", by="api:admin", note="hotfix")
    store.record_deployment("other", "ccc", action="deploy", by="api:admin")
    assert second.id > first.id and second.deployed_at >= first.deployed_at
    assert store.current_deployment("wf") == second
    assert {deployment.workflow: deployment.version for deployment in store.deployments()} == {
        "wf": "bbb",
        "other": "ccc",
    }
    store.record_deployment("wf", None, action="undeploy", by="api:admin")
    assert store.current_deployment("wf") is None
    assert [deployment.workflow for deployment in store.deployments()] == ["other"]
    history = store.deployment_history("wf")
    assert [(item.action, item.version) for item in history] == [
        ("undeploy", None),
        ("deploy", "bbb"),
        ("deploy", "aaa"),
    ]
    assert kept(history[-1].deployed_by.removeprefix("cli:"))
    assert history[1].note == "hotfix"
    assert store.deployment_history("wf", limit=1) == history[:1]


def test_a_rotated_hook_secret_stays_valid_for_its_grace(store: Store) -> None:
    store.add_hook_secret("wf", "hook", "whsec_one", retire_others_at=T0)
    store.add_hook_secret("wf", "other", "whsec_elsewhere", retire_others_at=T0)
    assert [secret.secret for secret in store.hook_secrets("wf", "hook", now=T0)] == ["whsec_one"]
    store.add_hook_secret("wf", "hook", "whsec_two", retire_others_at=T0 + 100)
    assert [secret.secret for secret in store.hook_secrets("wf", "hook", now=T0 + 50)] == ["whsec_two", "whsec_one"]
    assert [secret.secret for secret in store.hook_secrets("wf", "hook", now=T0 + 100)] == ["whsec_two"]
    # Rotating again at once retires the first one no later than it was already due.
    store.add_hook_secret("wf", "hook", "whsec_three", retire_others_at=T0 + 500)
    assert [secret.secret for secret in store.hook_secrets("wf", "hook", now=T0 + 200)] == ["whsec_three", "whsec_two"]
    assert [secret.secret for secret in store.hook_secrets("wf", "other", now=T0 + 200)] == ["whsec_elsewhere"]


def test_a_key_starts_one_run_ever_and_a_repeat_gets_the_first(store: Store) -> None:
    outcomes = race(*(lambda n=n: store.start_triggered([triggered(f"run-{n}", "msg-1")]) for n in range(4)))
    created = [result for [result] in outcomes if result[1]]
    assert len(created) == 1
    first = created[0][0]
    assert all(result == (first, False) for [result] in outcomes if not result[1])
    run = store.get_run(first)
    assert run is not None and (run.status, run.trigger, run.workflow) == ("queued", "webhook", "wf")
    assert [run.id for run in store.list_runs()] == [first]
    # The same key under another scope (another trigger) is another delivery.
    [(other, made)] = store.start_triggered([triggered("run-x", "msg-1", scope="webhook:wf:second")])
    assert (other, made) == ("run-x", True)
    store.flush_sync()
    log = store.deliveries("wf")
    assert [item.outcome for item in log].count("accepted") == 2
    assert [item.outcome for item in log].count("duplicate") == 3
    assert all(item.run_id in (first, "run-x") for item in log)
    assert {item.key for item in log} == {"msg-1"}


def test_a_triggered_run_keeps_where_it_answers(store: Store) -> None:
    reply_to = {"channel": "telegram", "chat": "42", "text": ODD_TEXT}
    [(run_id, _)] = store.start_triggered([triggered("run-1", "update-7", reply_to=reply_to)])
    run = store.get_run(run_id)
    assert run is not None and run.reply_to is not None
    assert run.reply_to == reply_to  # JSON, like the inputs: kept exactly
    plain = new_run(store, "run-2")
    stored = store.get_run(plain.id)
    assert stored is not None and stored.reply_to is None


def test_first_sighting_says_yes_once(store: Store) -> None:
    answers = race(*(lambda: store.first_sighting("telegram:bot", "update-1") for _ in range(4)))
    assert sorted(answers) == [False, False, False, True]
    assert store.first_sighting("telegram:bot", "update-2")
    assert store.first_sighting("telegram:other-bot", "update-1")


def test_refused_deliveries_are_logged_newest_first(store: Store) -> None:
    for n in range(3):
        store.log_delivery(
            base.Delivery(
                workflow="wf", trigger="hook", channel="webhook", outcome="refused", detail=f"403 bad signature {n}"
            )
        )
    store.log_delivery(
        base.Delivery(workflow="other", trigger="t", channel="whatsapp", outcome="refused", key=ODD_TEXT)
    )
    store.flush_sync()
    log = store.deliveries("wf")
    assert [item.detail for item in log] == ["403 bad signature 2", "403 bad signature 1", "403 bad signature 0"]
    assert all(item.at > 0 and item.id > 0 for item in log)
    assert len(store.deliveries("wf", limit=2)) == 2
    [other] = store.deliveries("other")
    assert kept(other.key)
    assert len(store.deliveries()) == 4


def test_a_fire_is_claimed_once_with_its_runs(store: Store) -> None:
    schedule = base.Schedule("wf", "daily", "v1", "0 9 * * *", "Europe/Paris", next_fire_at=T0)
    store.set_schedules("wf", [schedule, base.Schedule("wf", "hourly", "v1", "0 * * * *", "UTC", T0 + 5)])
    store.set_schedules("other", [base.Schedule("other", "s", "v9", "* * * * *", "UTC", None)])
    assert [item.trigger for item in store.schedules("wf")] == ["daily", "hourly"]
    assert len(store.schedules()) == 3

    def claim(n: int) -> bool:
        run = triggered(f"fire-{n}", str(T0), scope="schedule:wf:daily").run
        request = base.TriggeredRun(
            run=run,
            scope="schedule:wf:daily",
            key=str(T0),
            delivery=base.Delivery(workflow="wf", trigger="daily", channel="schedule", outcome="accepted"),
        )
        return store.claim_fire(schedule, next_fire_at=T0 + 86400, runs=[request])

    results = race(*(lambda n=n: claim(n) for n in range(4)))
    assert sorted(results) == [False, False, False, True]
    assert len(store.list_runs(workflow="wf")) == 1
    [daily, hourly] = store.schedules("wf")
    assert (daily.next_fire_at, daily.last_fire_at) == (T0 + 86400, T0)
    assert hourly.next_fire_at == T0 + 5
    # A schedule replaced (a new version deployed) is not claimed under its old version.
    store.set_schedules("wf", [base.Schedule("wf", "daily", "v2", "0 9 * * *", "UTC", T0 + 86400)])
    stale = base.Schedule("wf", "daily", "v1", "0 9 * * *", "UTC", T0 + 86400)
    assert not store.claim_fire(stale, next_fire_at=T0 + 2 * 86400, runs=[])
    assert store.schedules("wf")[0].version == "v2"
    store.set_schedules("wf", [])
    assert store.schedules("wf") == []
