"""`agentflow chat`: the same engine, commands and sessions in a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from agentflow.channels.terminal import chat_loop
from agentflow.chat.engine import ConversationEngine
from agentflow.runtime import AgentFlow
from tests.fakes.openai_server import FakeLLM, Text, ToolCalls
from tests.integration.test_chat import GOOD


async def test_terminal_conversation_builds_and_runs_a_workflow(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": GOOD})]))
    fake_llm.enqueue(Text("Built it."))
    stdin = io.StringIO("I want a workflow that shouts\n/run text=hey\n/quit\n")
    stdout = io.StringIO()
    engine = ConversationEngine(flow, run_wait=20)
    await flow.executor.start()
    try:
        await chat_loop(flow, engine, "term", stdin=stdin, stdout=stdout)
    finally:
        await flow.executor.stop()
    output = stdout.getvalue()
    assert "… write_workflow…" in output
    assert "draft 1 (valid)" in output and "+apiVersion: agentflow/v1" in output
    assert "succeeded" in output and "hey!" in output


def test_agentflow_chat_command_keeps_the_session_across_processes(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTFLOW_HOME": str(tmp_path / "data"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("AGENTFLOW_MODEL", None)
    env["OLLAMA_API_BASE"] = "http://127.0.0.1:9"  # nothing listens: no provider is detected

    def chat(text: str) -> str:
        completed = subprocess.run(
            [sys.executable, "-m", "agentflow.cli", "chat", "--session", "mine"],
            input=text,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    first = chat("/new hello\n/run name=Term\n")
    assert "AGENTFLOW_MODEL" in first  # says what to configure
    assert "Hello, Term!" in first
    second = chat("/show\n")
    assert "(session mine: last messages)" in second and "name: hello" in second
