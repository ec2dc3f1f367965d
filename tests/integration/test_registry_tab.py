"""The Agents tab's handlers on a real AgentFlow: list, add by URL, remove, issue and revoke tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.web.server import AppState
from agentflow.web.ui import agents
from tests.fakes.agent_card import card, serve_card


@pytest.fixture
def tab(tmp_path: Path) -> Iterator[agents.AgentsTab]:
    settings = Settings(home=tmp_path / "data", tracing=False, egress_allow_internal=("127.0.0.1",))
    flow = AgentFlow.open(settings)
    try:
        with gr.Blocks():
            yield agents.build(AppState(settings=settings, _flow=flow))
    finally:
        flow.close()


def test_the_tab_adds_lists_and_removes_agents(tab: agents.AgentsTab) -> None:
    assert tab.refresh()[tab.status] == agents.EMPTY
    with serve_card(card("writer")) as served:
        added = asyncio.run(tab.add(served.url))
    assert "Added **writer**" in added[tab.status]
    frame = added[tab.table]
    assert list(frame["name"]) == ["writer"] and list(frame["source"]) == ["added by URL"]
    assert list(frame["state"]) == ["healthy"] and list(frame["skills"]) == ["summarise"]
    assert tab.refresh()[tab.status] == "1 agent: 1 healthy."
    refused = asyncio.run(tab.add("http://169.254.169.254/"))
    assert refused[tab.status].startswith("Not added:") and "AGENTFLOW_EGRESS_ALLOW_INTERNAL" in refused[tab.status]
    agent_id = str(frame["id"][0])
    removed = tab.remove(agent_id)
    assert removed[tab.status] == f"Removed `{agent_id}`." and removed[tab.table].empty
    assert "no agent" in tab.remove(agent_id)[tab.status]
    assert tab.remove("")[tab.status] == "Pick an agent in the table first."


def test_the_tab_issues_a_token_once_and_revokes_it(tab: agents.AgentsTab) -> None:
    issued = tab.issue("laptop", "2h")
    assert issued[tab.token].startswith("aft_") and "not shown again" in issued[tab.status]
    [row] = issued[tab.tokens].to_dict("records")
    assert (row["note"], row["status"]) == ("laptop", "unused")
    assert tab.refresh()[tab.token] == ""  # shown once
    revoked = tab.revoke(row["id"])
    assert revoked[tab.status] == f"Revoked `{row['id']}`." and list(revoked[tab.tokens]["status"]) == ["revoked"]
    assert "already used or revoked" in tab.revoke(row["id"])[tab.status]
    assert "not a duration" in tab.issue("", "soon")[tab.status]
