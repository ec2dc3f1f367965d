"""`agentflow grant`, `agentflow grants` and `agentflow secrets`, in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.integration.helpers import workflow

NOTIFY = workflow(
    "notify",
    """
    nodes:
      send:
        type: tool
        tool: http_request
        args: {url: "https://hooks.example.com/x", headers: {t: "${env:HOOK_TOKEN}"}}
    """,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("AGENTFLOW_HOME", str(path))
    return path


def saved_without_grant(home: Path) -> str:
    """A version stored the way the assistant stores one: nothing granted."""
    flow = AgentFlow.open(Settings(home=home))
    try:
        return flow.save_workflow(NOTIFY).version
    finally:
        flow.close()


def test_grant_shows_what_widens_and_records_who(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    version = saved_without_grant(home)

    assert main(["grant", "notify", "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"'notify' v1 (id {version}) needs, beyond its grant:" in out
    assert "  + tool http_request\n  + egress to hooks.example.com\n  + secret HOOK_TOKEN\n" in out
    assert "granted by cli:" in out

    assert main(["grant", "notify", "--yes"]) == 0
    assert "nothing to grant" in capsys.readouterr().out
    assert main(["grants", "notify", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["granted_by"].startswith("cli:") and record["version"] == version
    assert record["capabilities"] == {
        "tools": ["http_request"],
        "egress": ["hooks.example.com"],
        "secrets": ["HOOK_TOKEN"],
        "channels": [],
    }


def test_grant_needs_a_confirmation_away_from_a_terminal(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved_without_grant(home)
    assert main(["grant", "notify"]) == 2  # stdin is not a terminal under pytest
    assert "confirm with --yes" in capsys.readouterr().err
    assert main(["grants", "notify"]) == 0
    assert "nothing was ever granted" in capsys.readouterr().out


def test_revoke_puts_every_version_back_under_review(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved_without_grant(home)
    assert main(["grant", "notify", "--yes"]) == 0
    assert main(["grant", "notify", "--revoke"]) == 0
    assert "revoked every grant" in capsys.readouterr().out
    assert main(["grant", "notify", "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["granted"] is True


def test_grant_of_an_unknown_workflow_or_version(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grant", "nope", "--yes"]) == 2
    assert "no workflow named 'nope'" in capsys.readouterr().err
    saved_without_grant(home)
    assert main(["grant", "notify", "--version", "zzz", "--yes"]) == 2
    assert "has no version 'zzz'" in capsys.readouterr().err


def test_run_grants_the_persons_own_file_and_says_what(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(workflow("mine", "nodes:\n  add: {type: tool, tool: calculator, args: {expression: '1+1'}}"))
    assert main(["run", str(path), "--json"]) == 0  # a pure tool: nothing to grant, nothing said
    assert "granted by" not in capsys.readouterr().err


def test_secrets_lists_names_never_values(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_SLACK_TOKEN", "xoxb-very-secret-value")
    monkeypatch.setenv("AGENTFLOW_SECRET_TINY", "abc")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-a-secret-here")
    assert main(["secrets"]) == 0
    captured = capsys.readouterr()
    assert "SLACK_TOKEN" in captured.out and "xoxb" not in captured.out
    assert "OPENAI_API_KEY" not in captured.out
    assert "shorter than 8 characters: TINY" in captured.err
