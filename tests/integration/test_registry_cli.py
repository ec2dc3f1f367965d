"""`agentflow agents list|add|remove|token`, in this process, on the data directory's store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.cli import main
from tests.fakes.agent_card import CardServer, card, serve_card


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("AGENTFLOW_HOME", str(path))
    monkeypatch.setenv("AGENTFLOW_EGRESS_ALLOW_INTERNAL", "127.0.0.1")
    return path


@pytest.fixture
def writer() -> Iterator[CardServer]:
    with serve_card(card("writer")) as served:
        yield served


def out(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    assert main(list(args)) == code
    captured = capsys.readouterr()
    return captured.out if code == 0 else captured.err


def test_add_list_and_remove_an_agent(home: Path, writer: CardServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no agents; add one with `agentflow agents add URL`" in out(capsys, "agents", "list")
    added = json.loads(out(capsys, "agents", "add", writer.url, "--json"))
    assert (added["name"], added["source"], added["state"]) == ("writer", "url", "healthy")
    [listed] = json.loads(out(capsys, "agents", "list", "--json"))
    assert listed["id"] == added["id"] and [skill["id"] for skill in listed["skills"]] == ["summarise"]
    table = out(capsys, "agents", "list")
    assert "writer" in table and "summarise" in table and "added by URL" in table and "healthy" in table
    assert f"removed agent {added['id']}" in out(capsys, "agents", "remove", added["id"])
    assert json.loads(out(capsys, "agents", "list", "--json")) == []
    assert f"no agent {added['id']}" in out(capsys, "agents", "remove", added["id"], code=2)


def test_adding_an_internal_address_says_which_setting_opens_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = out(capsys, "agents", "add", "http://169.254.169.254/", code=2)
    assert "169.254.169.254" in error and "AGENTFLOW_EGRESS_ALLOW_INTERNAL" in error


def test_tokens_are_issued_once_listed_and_revoked(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issued = json.loads(out(capsys, "agents", "token", "--note", "laptop", "--ttl", "2h", "--json"))
    assert issued["token"].startswith("aft_") and issued["note"] == "laptop"
    assert main(["agents", "token"]) == 0
    plain = capsys.readouterr()
    assert plain.out.strip().startswith("aft_") and "shown only now" in plain.err
    listed = json.loads(out(capsys, "agents", "token", "--list", "--json"))
    assert [item["note"] for item in listed] == [None, "laptop"]
    assert all("token" not in item for item in listed)
    assert listed[1]["expires_at"] == issued["expires_at"]
    assert f"revoked enrolment token {issued['id']}" in out(capsys, "agents", "token", "--revoke", issued["id"])
    assert "revoked" in out(capsys, "agents", "token", "--list")
    assert "already used or revoked" in out(capsys, "agents", "token", "--revoke", issued["id"], code=2)
    assert "--ttl 'soon' is not a duration" in out(capsys, "agents", "token", "--ttl", "soon", code=2)
