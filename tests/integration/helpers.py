"""Small helpers for engine tests: write a workflow, run it, read what happened."""

from __future__ import annotations

import textwrap
from typing import Any

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.runtime import AgentFlow
from agentflow.store.base import RunRecord


def workflow(name: str, body: str) -> str:
    """A workflow document from its `spec:` body (indented YAML)."""
    return f"apiVersion: agentflow/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "  "
    )


PERSON = "test:person"


async def run_source(
    flow: AgentFlow, source: str, inputs: dict[str, Any] | None = None, *, grant: bool = True
) -> RunRecord:
    """Save and run a workflow; `grant`: its author is a person, who grants what it needs (as `agentflow run`)."""
    version = flow.save_workflow(source)
    if grant:
        flow.grant_version(version, by=PERSON)
    run = flow.submit(version, inputs or {})
    if await flow.executor.run(run.id) is None:
        # The process's own queue loop (a started executor) claimed it first: wait for it there.
        await flow.executor.wait_for(run.id, statuses=TERMINAL_STATUSES | {"waiting_approval"})
    await flow.store.flush()
    record = flow.store.get_run(run.id)
    assert record is not None
    return record


def node_statuses(flow: AgentFlow, run_id: str) -> dict[str, list[str]]:
    """node id -> statuses of its executions, in order (map branches excluded)."""
    statuses: dict[str, list[str]] = {}
    for node_run in flow.store.node_runs(run_id):
        if node_run.item_index is None:
            statuses.setdefault(node_run.node_id, []).append(node_run.status)
    return statuses


def prompts(requests: list[dict[str, Any]]) -> list[str]:
    """The last user message of every request the fake LLM received."""
    found = []
    for request in requests:
        users = [message for message in request["messages"] if message["role"] == "user"]
        content = users[-1]["content"] if users else ""
        found.append(content if isinstance(content, str) else str(content))
    return found
