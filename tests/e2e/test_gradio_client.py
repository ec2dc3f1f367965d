"""The chat, called the way a script would: `gradio_client` against the real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gradio_client import Client

from agentflow.chat.history import ChatHistory
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.e2e.server import fake_settings, serve
from tests.fakes.openai_server import FakeLLM, Text, ToolCalls
from tests.integration.helpers import workflow

pytestmark = [
    pytest.mark.slow,
    # Raised inside gradio's queue (gradio 6.31 with pandas 3), not by our code.
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

SHOUT = workflow(
    "shout",
    """
    inputs: {text: {type: string, description: what to shout}}
    nodes:
      shout: {type: transform, expr: "join('', [inputs.text, '!'])"}
    outputs: {result: "{{ shout }}"}
    """,
)


@contextmanager
def client_for(url: str) -> Iterator[Client]:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
    try:
        yield client
    finally:
        client.close()


def test_the_chat_endpoint_writes_a_workflow_version_and_runs_it(tmp_path: Path, fake_llm: FakeLLM) -> None:
    home = tmp_path / "data"
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": SHOUT, "summary": "shout the text"})]))
    fake_llm.enqueue(Text("I wrote a workflow that shouts your text."))
    with serve(fake_settings(home, fake_llm)) as url, client_for(url) as client:
        api = client.view_api(return_format="dict", print_info=False)
        assert list(api["named_endpoints"]) == ["/chat"]  # the UI's own events are private
        assert api["unnamed_endpoints"] == {}

        text, reply = client.predict("I want a workflow that shouts my text", "script-1", api_name="/chat")
        assert text == "I wrote a workflow that shouts your text."
        assert reply["session_id"] == "script-1"
        assert reply["valid"] is True and reply["version"] == 1 and "name: shout" in reply["yaml"]
        assert "+  nodes:" in reply["diff"] and "/run" in reply["actions"]

        text, reply = client.predict("/run text=hey", "script-1", api_name="/chat")
        assert "succeeded" in text and "hey!" in text
        assert len(reply["run_ids"]) == 1
        run_id = reply["run_ids"][0]

        text, reply = client.predict("/show", "", api_name="/chat")  # no session id: a new conversation
        assert reply["session_id"] not in ("", "script-1") and "No workflow yet" in text

    reopened = AgentFlow.open(Settings(home=home))  # the server has stopped: read what it left on disk
    try:
        history = ChatHistory(reopened.store)
        versions = history.versions("script-1")
        assert [version.number for version in versions] == [1] and versions[0].author == "assistant"
        assert [message.role for message in history.messages("script-1")] == ["user", "assistant"] * 2
        run = reopened.store.get_run(run_id)
        assert run is not None and run.status == "succeeded" and run.outputs == {"result": "hey!"}
    finally:
        reopened.close()


def test_without_a_model_the_chat_says_what_to_configure_and_commands_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_BASE", "http://127.0.0.1:9")  # nothing listens: no Ollama to detect
    with serve(Settings(home=tmp_path / "data")) as url, client_for(url) as client:
        text, reply = client.predict("I want a workflow that greets people", "offline", api_name="/chat")
        assert "AGENTFLOW_MODEL" in text and "OPENAI_API_KEY" in text and reply["version"] is None

        text, reply = client.predict("/new hello", "offline", api_name="/chat")
        assert reply["valid"] is True and reply["version"] == 1

        text, _ = client.predict("/run name=Ada", "offline", api_name="/chat")
        assert "succeeded" in text and "Hello, Ada!" in text
