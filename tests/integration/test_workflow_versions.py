"""One notion of version (docs/versions.md) across the chat, the store, the Workflows tab, the API and the CLI.

A workflow's versions are the stored ones, v1, v2, … in save order, the content hash their id; the
chat's edits are drafts until saved or run. `/save` keeps the person's YAML as written.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from agentflow.chat.engine import ConversationEngine
from agentflow.chat.workspace import PatchError, set_scalar
from agentflow.cli import main
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.sqlite import content_hash
from agentflow.versions import VersionRef
from agentflow.web.server import AppState, create_app
from agentflow.web.ui import chat as chat_ui
from agentflow.web.ui import workflows
from agentflow.web.ui.chat import status_line
from tests.integration.helpers import workflow

# Comments, blank lines, quoting, flow and block style, keys out of the usual order: all must survive /save.
WRITTEN = """# yaml-language-server: $schema=../schemas/workflow.schema.json
# Greets someone. Keep this comment.

kind: Workflow
apiVersion: 'agentflow/v1'   # the language

metadata:
  description: "Greet someone"   # said in the Workflows tab
  name: 'hello'   # the slug
  tags: [demo, "greeting"]

spec:
  inputs:
    name: {type: string, default: world}


  nodes:
    greet:
      type: transform
      expr: "join('', ['Hello, ', inputs.name, '!'])"
  outputs:
    greeting: "{{ greet }}"
"""
NOTIFY = workflow(
    "notify",
    """
    nodes:
      send:
        type: tool
        tool: http_request
        args: {url: "https://hooks.example.com/x", method: POST}
    """,
)


@pytest.fixture
async def chat(flow: AgentFlow) -> AsyncIterator[ConversationEngine]:
    await flow.executor.start()
    engine = ConversationEngine(flow, model="", run_wait=20)
    engine.default_model = None  # slash commands only: no model is needed anywhere here
    yield engine
    await flow.executor.stop()


@pytest.fixture
def tab(flow: AgentFlow, chat: ConversationEngine) -> workflows.WorkflowsTab:
    state = AppState(flow.settings, chat=chat, _flow=flow)
    with gr.Blocks(), gr.Tabs() as tabs:
        with gr.Tab("Chat"):
            chat_view = chat_ui.build(state, gr.BrowserState(None))
        with gr.Tab("Workflows"):
            return workflows.build(state, chat_view, tabs)


@pytest.fixture
def cli_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTFLOW_HOME", str(home))
    for variable in ("LOGNAME", "USER"):  # who `agentflow grant` says granted
        monkeypatch.setenv(variable, "ada")
    return home


async def cli(argv: list[str]) -> int:
    """`agentflow ARGV` in this process, beside the chat's event loop (the CLI runs one of its own)."""
    return await asyncio.to_thread(main, argv)


def value(updates: dict[Any, Any], component: Any) -> Any:
    update = updates[component]
    return update.get("value") if isinstance(update, dict) else update


async def say(chat: ConversationEngine, session: str, text: str) -> str:
    return (await chat.handle(session, text, person="web:ada")).text


async def test_one_notion_of_version_in_the_chat_the_store_the_tab_the_api_and_the_cli(
    chat: ConversationEngine, tab: workflows.WorkflowsTab, cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = chat.flow.store
    await say(chat, "s1", "/new hello")
    first = await chat.handle("s1", "/save greeter")
    one = store.get_workflow("greeter")
    assert one is not None and one.number == 1
    assert first.text.startswith(f"Saved as 'greeter' v1 (`{one.version}`).")
    assert (first.draft, first.version, first.saved) == (2, 2, VersionRef("greeter", 1, one.version))
    assert "draft 2, saved as **'greeter' v1**" in status_line([], draft=first.draft, applied=True, stored=first.saved)

    # A hand edit is a draft, not a version, until it is saved.
    current = chat.history.current("s1")
    assert current is not None
    edited = chat.apply_edit("s1", current.source.replace("Greet someone", "Greet anyone"), person="web:ada")
    assert (edited.text, edited.draft, edited.saved) == ("Applied as draft 3.", 3, None)
    assert "not saved as a version yet" in status_line([], draft=3, applied=True, stored=None)
    second = await chat.handle("s1", "/save greeter")
    two = store.get_workflow("greeter")
    assert two is not None and two.number == 2 and second.saved == VersionRef("greeter", 2, two.version)
    assert second.text.startswith("Saved as 'greeter' v2") and second.draft == 3  # the name was already greeter

    ran = await say(chat, "s1", "/run name=Ada")
    assert "of 'greeter' v2: **succeeded**" in ran
    listed = await say(chat, "s1", "/versions")
    assert f"- v2 `{two.version}`" in listed and "← current, this draft" in listed and f"- v1 `{one.version}`" in listed
    drafts = await say(chat, "s1", "/history")
    assert "- draft 3 by user: edited by hand ← current (saved as 'greeter' v2)" in drafts
    assert "- draft 1 by command: /new hello" in drafts

    # The tab names them the same way: the table, the pickers, the heading.
    table = value(tab.refresh(), tab.table)
    assert table.iloc[0][["name", "current", "versions"]].tolist() == ["greeter", "v2", 2]
    shown = tab.show("greeter", None, None)
    assert value(shown, tab.versions) == "v2"
    assert [label for _, label in shown[tab.versions]["choices"]] == ["v2", "v1"]
    assert shown[tab.versions]["choices"][0][0].startswith("v2 (current) — ")
    assert "greeter v2" in value(shown, tab.heading) and two.version in value(shown, tab.heading)
    assert value(tab.show("greeter", "v1", None), tab.source) == one.source

    # The API: the same numbers beside the ids, and a version found by its number.
    with TestClient(create_app(Settings(home=cli_home))) as client:
        listed_api = client.get("/api/workflows/greeter/versions").json()
        assert [(item["number"], item["version"]) for item in listed_api] == [(2, two.version), (1, one.version)]
        by_number = client.get("/api/workflows/greeter/versions/v1").json()
        assert (by_number["number"], by_number["version"], by_number["source"]) == (1, one.version, one.source)
        assert client.get("/api/workflows/greeter").json()["number"] == 2

    # The CLI: `--version v1` and the same words.
    assert await cli(["grants", "greeter"]) == 0
    assert "nothing was ever granted to 'greeter'" in capsys.readouterr().out
    assert await cli(["grant", "greeter", "--version", "v1", "--yes", "--json"]) == 0
    granted = json.loads(capsys.readouterr().out)
    assert (granted["version"], granted["number"]) == (one.version, 1)

    # Opening an older version makes it the next draft; saving it again adds no version.
    opened = await say(chat, "s1", "/open greeter v1")
    assert opened.startswith("Opened 'greeter' v1 as draft 4.")  # drafts only grow: undo can come back
    again = await say(chat, "s1", "/save greeter")
    assert again == f"This draft is 'greeter' v1 (`{one.version}`), saved before; it is the current version again."
    assert await say(chat, "s1", "/save greeter") == f"Already saved: this draft is 'greeter' v1 (`{one.version}`)."
    assert [stored.number for stored in store.list_versions("greeter")] == [2, 1]
    assert store.get_workflow("greeter") == one


async def test_save_keeps_the_yaml_as_written(chat: ConversationEngine) -> None:
    assert chat.apply_edit("s2", WRITTEN).valid
    reply = await chat.handle("s2", "/save greeter")
    assert reply.text.startswith("Saved as 'greeter' v1")
    expected = WRITTEN.replace("name: 'hello'   # the slug", "name: 'greeter'   # the slug")
    assert reply.yaml == expected
    stored = chat.flow.store.get_workflow("greeter")
    assert stored is not None and stored.source == expected and stored.version == content_hash(expected)

    # Inline metadata stays inline; a name YAML would read as a number is quoted.
    inline = workflow("hello", "nodes:\n  a: {type: transform, expr: '`1`'}") + "\n"
    assert chat.apply_edit("s3", inline).valid
    assert (await chat.handle("s3", "/save 2024")).yaml == inline.replace("{name: hello}", '{name: "2024"}')
    assert chat.flow.store.get_workflow("2024") is not None


async def test_bad_names_and_versions_are_refused_with_what_to_do(
    chat: ConversationEngine, tab: workflows.WorkflowsTab, cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "give a name: /save NAME" in await say(chat, "s4", "/save")
    assert await say(chat, "s4", "/save greeter") == "No workflow to save yet."
    await say(chat, "s4", "/new hello")
    refused = await say(chat, "s4", "/save Bad_Name")
    assert (
        refused.startswith("Cannot save under that name: line ") and "lowercase letters, digits and dashes" in refused
    )
    assert chat.flow.store.list_workflows() == []
    assert "there is no saved workflow 'nope'; saved workflows: none yet" in await say(chat, "s4", "/open nope")
    await say(chat, "s4", "/save greeter")
    missing = await say(chat, "s4", "/diff v1 v9")
    assert "/diff: 'greeter' has no version 'v9'; its versions, newest first: v1" in missing
    assert "this conversation has no draft 7; /history lists its drafts" in await say(chat, "s4", "/diff 7 1")
    assert "give two drafts or versions" in await say(chat, "s4", "/diff v1")
    assert "has no version 'v9'" in await say(chat, "s4", "/open greeter v9")

    unknown = tab.show("nope", None, None)
    assert "there is no saved workflow 'nope'" in value(unknown, tab.heading)
    assert unknown[tab.open]["interactive"] is False
    no_version = tab.show("greeter", "v9", "v1")
    assert "'greeter' has no version 'v9'" in value(no_version, tab.heading) and value(no_version, tab.source) == ""
    assert [label for _, label in no_version[tab.versions]["choices"]] == ["v1"]
    assert "no version 'v7'" in value(tab.show("greeter", "v1", "v7"), tab.heading)

    assert await cli(["grant", "greeter", "--version", "v9", "--yes"]) == 2
    assert "'greeter' has no version 'v9'; its versions, newest first: v1" in capsys.readouterr().err
    with TestClient(create_app(Settings(home=cli_home))) as client:
        response = client.get("/api/workflows/greeter/versions/v9")
        assert response.status_code == 404 and "/api/workflows/greeter/versions" in response.json()["detail"]


async def test_a_diff_between_any_two_versions(chat: ConversationEngine, tab: workflows.WorkflowsTab) -> None:
    for greeting in ("Hello", "Hi", "Hey"):
        chat.apply_edit("s5", WRITTEN.replace("'Hello, '", f"'{greeting}, '"))
        await say(chat, "s5", "/save hello")
    one, _, three = sorted(chat.flow.store.list_versions("hello"), key=lambda stored: stored.number)
    shown = tab.show("hello", "v3", "v1")
    diff = value(shown, tab.diff)
    assert diff.startswith("--- hello v1\n+++ hello v3\n")
    assert "-      expr: \"join('', ['Hello, '" in diff and "+      expr: \"join('', ['Hey, '" in diff
    assert shown[tab.diff]["visible"] is True and value(shown, tab.compare) == "v1"
    assert [label for _, label in shown[tab.compare]["choices"]] == ["", "v2", "v1"]  # all but the one shown
    assert 'href="/?tab=workflows&amp;workflow=hello&amp;version=v3&amp;compare=v1"' in value(shown, tab.heading)
    # Either way round, and by ids (or a prefix of one) as well as numbers.
    backwards = value(tab.show("hello", one.version[:6], three.version), tab.diff)
    assert backwards.startswith("--- hello v3\n+++ hello v1\n")
    assert tab.show("hello", "v2", "v2")[tab.diff]["visible"] is False  # a version against itself: no diff
    in_chat = await say(chat, "s5", "/diff v1 3")  # a saved version against a draft of this conversation
    assert "--- 'hello' v1\n+++ draft 3\n" in in_chat


async def test_grants_and_who_gave_them_runs_and_profile(
    chat: ConversationEngine, tab: workflows.WorkflowsTab, cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = chat.flow
    one = flow.save_workflow(NOTIFY)  # stored the way the assistant stores one: nothing granted
    grant = value(tab.show("notify", None, None), tab.grant)
    assert "⚠ **Needs review**" in grant and "agentflow grant notify --version v1" in grant
    assert "No one has granted notify anything yet." in grant
    assert value(tab.refresh(), tab.table).iloc[0]["grant"].startswith("needs review: tool http_request")

    assert await cli(["grant", "notify", "--version", "v1", "--yes"]) == 0
    assert f"granted by cli:ada; 'notify' v1 (id {one.version}) can run" in capsys.readouterr().out
    grant = value(tab.show("notify", "v1", None), tab.grant)
    assert "✓ **Granted**" in grant and "by **cli:ada** for v1: tool http_request; egress to hooks.example.com" in grant

    # A person's /grant in the chat grants the version it opened: the tab says who, and for which.
    flow.save_workflow(NOTIFY.replace("hooks.example.com/x", "hooks.example.org/x"))
    assert (await say(chat, "s6", "/open notify")).startswith("Opened 'notify' v2 as draft 1.")
    granted = (await chat.handle("s6", "/grant", person="web:bob")).text
    assert granted.startswith("Granted by web:bob; 'notify' v2 may now use:\n- egress to hooks.example.org")
    grant = value(tab.show("notify", "v2", None), tab.grant)
    assert grant.index("by **web:bob** for v2") < grant.index("by **cli:ada**")  # newest first

    # Its runs, each linking to the run; the profile of its finished runs.
    await say(chat, "s7", "/new hello")
    ran = await chat.handle("s7", "/run name=Ada")
    assert "of 'hello' v1: **succeeded**" in ran.text
    await flow.store.flush()
    shown = tab.show("hello", None, None)
    runs = value(shown, tab.runs)
    (run_id,) = ran.run_ids
    assert f'<a href="/?tab=runs&amp;run={run_id}" class="run-link">{run_id[:12]}</a>' in runs
    assert '<b><a href="/?tab=workflows&amp;workflow=hello&amp;version=v1">v1</a></b>' in runs
    profile = value(shown, tab.profile)
    assert "Profile</b> of the last 1 finished run: bottleneck <b>greet</b>" in profile
    assert "<td>greet ← bottleneck</td><td>transform</td><td>1</td>" in profile


async def test_the_tab_offers_everything_it_updates(tab: workflows.WorkflowsTab) -> None:
    shown = tab.show("", None, None)
    assert set(shown) <= set(tab.outputs) and set(tab.refresh()) <= set(tab.outputs)
    assert "Click a workflow" in value(shown, tab.heading)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('metadata:\n  name: "hello"  # slug\n', 'metadata:\n  name: "greeter"  # slug\n'),
        ("metadata:\r\n  name: hello\r\n  tags: [a]\r\n", "metadata:\r\n  name: greeter\r\n  tags: [a]\r\n"),
        ("metadata:\n  name: &n hello\n  description: *n\n", "metadata:\n  name: &n greeter\n  description: *n\n"),
        ("metadata:\n  name: |\n    hello\nspec: {}\n", 'metadata:\n  name: "greeter"\nspec: {}\n'),
        ("metadata:\n  description: x\n", "metadata:\n  name: greeter\n  description: x\n"),
        ("metadata: {description: 'x'}\n", "metadata: {name: greeter, description: 'x'}\n"),
        ("metadata: {}\n", "metadata: {name: greeter}\n"),
    ],
)
def test_a_name_is_set_in_the_text_itself(before: str, after: str) -> None:
    assert set_scalar(before, ("metadata", "name"), "greeter") == after


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("metadata: 3\n", "'metadata' is not a mapping"),
        ("kind: Workflow\n", "'metadata' is not in the workflow"),
        ("metadata: {name: [a]}\n", "'metadata.name' is not a plain value"),
        ("metadata: {name: hello\n", "the YAML does not parse"),
    ],
)
def test_a_name_that_cannot_be_set_says_why(source: str, problem: str) -> None:
    with pytest.raises(PatchError, match=re.escape(problem)):
        set_scalar(source, ("metadata", "name"), "greeter")
