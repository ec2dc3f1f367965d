"""The SDK's deployment calls against the real server: deploy, triggers, deliveries, rotate, rollback, undeploy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.client import AgentFlowClient, ConflictError, GrantNeededError, NotFoundError
from agentflow.runtime import AgentFlow
from tests.e2e.server import fake_settings, serve
from tests.fakes.openai_server import FakeLLM

pytestmark = pytest.mark.slow

SOURCE = """\
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: hook}
spec:
  inputs: {ticket: string}
  nodes:
    echo: {type: transform, expr: inputs.ticket}
  outputs: {ticket: "{{ echo }}"}
  triggers:
    - webhook: {name: github}
    - schedule: {cron: "0 9 * * *", timezone: Asia/Tokyo, inputs: {ticket: digest}}
"""


@pytest.fixture
def client(home: Path, fake_llm: FakeLLM) -> Iterator[AgentFlowClient]:
    with serve(fake_settings(home, fake_llm), ui=False) as url, AgentFlowClient(url) as sdk:
        yield sdk


def test_deploy_lists_triggers_rotates_rolls_back_and_undeploys(client: AgentFlowClient) -> None:
    client.workflows.save(SOURCE)
    deployed = client.workflows.deploy("hook", note="first")
    assert deployed.deployment.action == "deploy" and deployed.deployment.note == "first"
    assert list(deployed.secrets) == ["github"] and deployed.secrets["github"].startswith("whsec_")
    triggers = {trigger.name: trigger for trigger in client.workflows.triggers("hook")}
    assert triggers["github"].path == "/api/hooks/hook/github"
    assert triggers["schedule"].next_fire_at is not None and "Asia/Tokyo" in triggers["schedule"].detail
    rotated = client.workflows.rotate_secret("hook", "github")
    assert rotated.secret != deployed.secrets["github"]
    assert client.workflows.deliveries("hook") == []

    with pytest.raises(ConflictError, match="no other version deployed"):
        client.workflows.rollback("hook")
    client.workflows.save(SOURCE.replace("expr: inputs.ticket", "expr: \"'same'\""))
    second = client.workflows.deploy("hook")
    assert second.secrets == {}  # the trigger keeps its secret
    back = client.workflows.rollback("hook")
    assert back.deployment.version == deployed.deployment.version
    status = client.workflows.deployments("hook")
    assert [entry.action for entry in status.history] == ["rollback", "deploy", "deploy"]
    assert client.workflows.undeploy("hook").action == "undeploy"
    assert client.workflows.triggers() == []
    with pytest.raises(NotFoundError):
        client.workflows.deploy("nothing")


def test_deploying_without_the_grant_says_what_is_missing(
    client: AgentFlowClient, home: Path, fake_llm: FakeLLM
) -> None:
    flow = AgentFlow.open(fake_settings(home, fake_llm))
    try:
        flow.save_workflow(SOURCE)  # saved, not granted: nobody said yes to webhooks yet
    finally:
        flow.close()
    with pytest.raises(GrantNeededError) as refused:
        client.workflows.deploy("hook")
    assert refused.value.missing is not None and refused.value.missing.channels == ["webhook"]
