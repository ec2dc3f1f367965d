"""`agentflow deploy`, `rollback`, `undeploy`, `deployments`, `triggers list`, `hooks secret` and `deliveries`,
in this process, on a fresh data directory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.cli_triggers import fire_time
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.base import Delivery, WorkflowVersion
from agentflow.triggers.deployments import SECRET_GRACE_SECONDS
from tests.integration.helpers import PERSON, workflow

TRIAGE = workflow(
    "triage",
    """
    inputs: {ticket: {type: string}}
    triggers:
      - webhook: {inputs: {ticket: issue.title}}
      - schedule: {cron: "0 9 * * 1-5", timezone: Europe/Paris, inputs: {ticket: daily digest}}
    nodes:
      echo: {type: transform, expr: "inputs.ticket"}
    outputs: {result: "{{ echo }}"}
    """,
)
PLAIN = workflow("plain", "nodes:\n  add: {type: tool, tool: calculator, args: {expression: '1+1'}}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("AGENTFLOW_HOME", str(path))
    monkeypatch.delenv("AGENTFLOW_PUBLIC_URL", raising=False)
    return path


@contextmanager
def opened(home: Path) -> Iterator[AgentFlow]:
    flow = AgentFlow.open(Settings(home=home))
    try:
        yield flow
    finally:
        flow.close()


def saved(home: Path, source: str = TRIAGE, *, grant: bool = True) -> WorkflowVersion:
    with opened(home) as flow:
        stored = flow.save_workflow(source)
        if grant:
            flow.grant_version(stored, by=PERSON)
        return stored


def output(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    assert main(list(command)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def refused(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    """The error line of a command that must fail as a usage error (exit code 2), with nothing on stdout."""
    assert main(list(command)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


def test_deploy_prints_the_live_triggers_and_the_secret_once(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved(home)
    out = output(capsys, "deploy", "triage", "--note", "first")
    assert out.startswith("deployed 'triage' v1 by cli:")
    assert "url   http://127.0.0.1:7860/api/hooks/triage/webhook" in out
    with opened(home) as flow:
        [schedule] = flow.store.schedules("triage")
        [secret] = flow.store.hook_secrets("triage", "webhook", now=time.time())
    next_fire = fire_time(schedule.next_fire_at, "Europe/Paris")
    assert " 09:00 CE" in next_fire and next_fire.endswith("(Europe/Paris)")  # read in the schedule's zone
    assert f"next  {next_fire}" in out
    assert f"  webhook  {secret.secret}\n" in out and "shown only this once" in out
    assert "`agentflow hooks secret triage --trigger webhook --rotate`" in out

    # Listed afterwards, and never with the secret again.
    listed = output(capsys, "triggers", "list")
    assert "triage v1 · webhook (webhook)" in listed
    assert "http://127.0.0.1:7860/api/hooks/triage/webhook" in listed
    assert f"next  {next_fire}" in listed
    assert "last  no delivery yet" in listed
    assert secret.secret not in listed
    history = output(capsys, "deployments", "triage")
    assert "  deploy    v1    by cli:" in history and "[first]" in history and "(in force)" in history

    # Deploying again keeps the secret: nothing new to show.
    again = output(capsys, "deploy", "triage")
    assert "whsec_" not in again and "live triggers:" in again


def test_the_public_url_makes_the_webhook_address(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    saved(home)
    monkeypatch.setenv("AGENTFLOW_PUBLIC_URL", "https://flows.example.com/")
    assert "url   https://flows.example.com/api/hooks/triage/webhook" in output(capsys, "deploy", "triage")


def test_deploy_json_parses(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored = saved(home)
    result = json.loads(output(capsys, "deploy", "triage", "--json"))
    assert result["workflow"] == "triage" and result["version"] == stored.version and result["label"] == "v1"
    assert result["action"] == "deploy" and result["deployed_by"].startswith("cli:") and result["previous"] is None
    assert list(result["secrets"]) == ["webhook"] and result["secrets"]["webhook"].startswith("whsec_")
    hook, schedule = result["triggers"]
    assert hook["url"] == "http://127.0.0.1:7860/api/hooks/triage/webhook" and hook["next_fire"] is None
    assert schedule["kind"] == "schedule" and schedule["timezone"] == "Europe/Paris"
    assert "T09:00:00+0" in schedule["next_fire"]  # 09:00 in Paris: +01:00 or +02:00

    listed = json.loads(output(capsys, "triggers", "list", "triage", "--json"))
    assert [item["name"] for item in listed] == ["webhook", "schedule"]
    assert listed[1]["next_fire_at"] == schedule["next_fire_at"]
    assert all(item["last_delivery"] is None for item in listed)
    [deployment] = json.loads(output(capsys, "deployments", "triage", "--json"))
    assert deployment["version"] == stored.version and deployment["label"] == "v1"


def test_a_version_needing_a_grant_is_not_deployed(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored = saved(home, grant=False)
    error = refused(capsys, "deploy", "triage")
    assert "needs a person's grant before it can run: started by signed webhooks" in error
    assert f"`agentflow grant triage --version {stored.version}`" in error
    assert "was never deployed" in output(capsys, "deployments", "triage")
    assert "is not deployed" in output(capsys, "triggers", "list", "triage")


def test_rollback_deploys_the_version_before(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = saved(home)
    second = saved(home, TRIAGE.replace('"0 9 * * 1-5"', '"30 7 * * *"'))
    assert output(capsys, "deploy", "triage", "--version", "v1").startswith("deployed 'triage' v1")
    assert output(capsys, "deploy", "triage").startswith("deployed 'triage' v2 (was v1) by cli:")
    with opened(home) as flow:
        assert [item.version for item in flow.store.schedules("triage")] == [second.version]

    out = output(capsys, "rollback", "triage")
    assert out.startswith("rolled back to 'triage' v1 (was v2) by cli:")
    assert "cron '0 9 * * 1-5'" in out
    with opened(home) as flow:
        deployed = flow.deployments.deployed("triage")
        assert deployed is not None and deployed.stored.version == first.version
        assert [item.cron for item in flow.store.schedules("triage")] == ["0 9 * * 1-5"]
    history = [line.split()[2:4] for line in output(capsys, "deployments", "triage").splitlines()]
    assert history == [["rollback", "v1"], ["deploy", "v2"], ["deploy", "v1"]]
    rolled = json.loads(output(capsys, "rollback", "triage", "--json"))  # and back again
    assert rolled["label"] == "v2" and rolled["action"] == "rollback" and rolled["previous"]["label"] == "v1"


def test_undeploy_stops_every_trigger(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved(home)
    output(capsys, "deploy", "triage")
    out = output(capsys, "undeploy", "triage")
    assert out.startswith("undeployed 'triage' (was v1) by cli:") and "`agentflow deploy triage`" in out
    assert "no deployed workflow has triggers" in output(capsys, "triggers", "list")
    assert json.loads(output(capsys, "triggers", "list", "--json")) == []
    with opened(home) as flow:
        assert flow.store.schedules("triage") == [] and flow.deployments.deployed("triage") is None
    [undeployed, _] = json.loads(output(capsys, "deployments", "triage", "--json"))
    assert undeployed["action"] == "undeploy" and undeployed["version"] is None and undeployed["label"] == "—"
    assert "nothing to undeploy" in refused(capsys, "undeploy", "triage")
    assert "is not deployed" in refused(capsys, "rollback", "triage")
    output(capsys, "deploy", "triage")
    assert json.loads(output(capsys, "undeploy", "triage", "--json"))["action"] == "undeploy"


def test_rotation_prints_a_new_secret_and_the_old_one_stays_valid_24_hours(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved(home)
    old = json.loads(output(capsys, "deploy", "triage", "--json"))["secrets"]["webhook"]
    out = output(capsys, "hooks", "secret", "triage", "--rotate")
    new = out.splitlines()[1].strip()
    assert out.startswith("new signing secret of 'triage' trigger webhook, shown only this once:\n")
    assert new.startswith("whsec_") and new != old
    assert "the previous secret stays valid 24 h, until " in out
    with opened(home) as flow:
        now = time.time()
        assert [item.secret for item in flow.store.hook_secrets("triage", "webhook", now=now)] == [new, old]
        later = now + SECRET_GRACE_SECONDS + 60
        assert [item.secret for item in flow.store.hook_secrets("triage", "webhook", now=later)] == [new]

    rotated = json.loads(output(capsys, "hooks", "secret", "triage", "--trigger", "webhook", "--rotate", "--json"))
    assert rotated["trigger"] == "webhook" and rotated["secret"] not in (old, new)
    assert rotated["url"] == "http://127.0.0.1:7860/api/hooks/triage/webhook"
    assert rotated["previous_valid_until"] == pytest.approx(time.time() + SECRET_GRACE_SECONDS, abs=600)

    # Without --rotate: nothing is shown, only how to make one.
    error = refused(capsys, "hooks", "secret", "triage")
    assert "shown only when it is made, at deploy or rotation" in error
    assert "`agentflow hooks secret triage --rotate`" in error and "whsec_" not in error


def test_hook_secret_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no workflow named 'triage'" in refused(capsys, "hooks", "secret", "triage", "--rotate")
    saved(home)
    assert "'triage' is not deployed" in refused(capsys, "hooks", "secret", "triage", "--rotate")
    assert "'triage' is not deployed" in refused(capsys, "hooks", "secret", "triage")
    output(capsys, "deploy", "triage")
    error = refused(capsys, "hooks", "secret", "triage", "--trigger", "schedule", "--rotate")
    assert "'triage' has no webhook trigger 'schedule'; its webhook triggers: webhook" in error
    saved(home, PLAIN)
    output(capsys, "deploy", "plain")
    assert "has no webhook trigger" in refused(capsys, "hooks", "secret", "plain", "--rotate")


def test_deliveries_say_accepted_duplicate_and_refused_with_why(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved(home)
    output(capsys, "deploy", "triage")
    assert "nothing was delivered to 'triage' yet" in output(capsys, "deliveries", "triage")
    with opened(home) as flow:
        now = time.time()
        for delivery in (
            Delivery("triage", "webhook", "webhook", "accepted", key="msg_1", run_id="a" * 32, at=now - 3),
            Delivery("triage", "webhook", "webhook", "duplicate", key="msg_1", run_id="a" * 32, at=now - 2),
            Delivery("triage", "webhook", "webhook", "refused", key="msg_2", detail="403: bad signature", at=now - 1),
        ):
            flow.store.log_delivery(delivery)
        flow.store.flush_sync()

    lines = output(capsys, "deliveries", "triage").splitlines()
    assert [line.split()[4] for line in lines] == ["refused", "duplicate", "accepted"]
    assert lines[0].endswith("key msg_2  — 403: bad signature")
    assert f"run {'a' * 12}  key msg_1" in lines[2]
    assert [item["outcome"] for item in json.loads(output(capsys, "deliveries", "triage", "--json"))] == [
        "refused",
        "duplicate",
        "accepted",
    ]
    [latest] = json.loads(output(capsys, "deliveries", "triage", "--limit", "1", "--json"))
    assert latest["detail"] == "403: bad signature"
    # The trigger list names each trigger's last delivery.
    listed = output(capsys, "triggers", "list", "triage")
    assert "last  refused " in listed and "— 403: bad signature" in listed
    assert "last  no delivery yet" in listed  # the schedule's
    assert "--limit 0: give a number from 1 to 1000" in refused(capsys, "deliveries", "triage", "--limit", "0")


def test_unknown_workflows_are_named(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        ["deploy", "nope"],
        ["rollback", "nope"],
        ["undeploy", "nope"],
        ["deployments", "nope"],
        ["triggers", "list", "nope"],
        ["deliveries", "nope"],
    ):
        assert "no workflow named 'nope'; save one with `agentflow run FILE`" in refused(capsys, *command)
    saved(home)
    assert "'triage' has no version 'v9'" in refused(capsys, "deploy", "triage", "--version", "v9")


def test_a_workflow_without_triggers_deploys_and_says_so(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved(home, PLAIN)
    out = output(capsys, "deploy", "plain")
    assert "it declares no triggers" in out
    assert "the deployed version of 'plain' declares no triggers" in output(capsys, "triggers", "list", "plain")


def test_deploy_works_on_this_machine_only(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = refused(capsys, "--server", "http://127.0.0.1:9", "deploy", "triage")
    assert "`agentflow deploy` works on this machine's data only" in error
