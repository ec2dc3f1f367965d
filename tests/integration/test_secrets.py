"""Secrets resolve at run time in tool arguments and are never written anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentflow.runtime import AgentFlow
from tests import postgres
from tests.fakes.openai_server import FakeLLM
from tests.integration.helpers import run_source, workflow

CANARY = "canary-7f3a9c1e-secret"


async def test_secret_in_tool_args_never_reaches_the_store(
    flow: AgentFlow, fake_llm: FakeLLM, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_AF_TEST_TOKEN", CANARY)
    base = fake_llm.base_url.removesuffix("/v1")
    source = workflow(
        "secret",
        f"""
        nodes:
          call:
            type: tool
            tool: http_request
            args:
              method: GET
              url: "{base}/missing?token=${{env:AF_TEST_TOKEN}}"
              headers: {{Authorization: "Bearer ${{env:AF_TEST_TOKEN}}"}}
          echo: {{type: transform, expr: "call", needs: [call]}}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    await flow.store.flush()
    if postgres.ON_POSTGRES:
        assert CANARY.encode() not in postgres.dump(os.environ["AGENTFLOW_DATABASE_URL"]), "secret found in Postgres"
    for path in home.iterdir() if home.exists() or not postgres.ON_POSTGRES else ():
        assert CANARY.encode() not in path.read_bytes(), f"secret found in {path.name}"


async def test_missing_secret_fails_the_node_naming_the_variable(flow: AgentFlow) -> None:
    source = workflow(
        "nosecret",
        """
        nodes:
          call: {type: tool, tool: http_request, args: {url: "http://127.0.0.1:9/${env:AF_NOT_SET_ANYWHERE}"}}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "AF_NOT_SET_ANYWHERE" in (run.error or "")
