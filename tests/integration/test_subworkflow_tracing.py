"""A sub-workflow's trace is its own, tagged with its parent's trace, run and node (real MLflow, offline)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentflow.observability import TraceExporter, TraceSettings, attach_tracing
from agentflow.observability.mlflow_tracer import import_mlflow
from agentflow.observability.tracer import trace_id_for
from agentflow.runtime import AgentFlow
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import PERSON, run_source, workflow
from tests.integration.test_tracing import FLUSH, mlflow_template, settings

__all__ = ["mlflow_template", "settings"]


@pytest.fixture
def traced(flow: AgentFlow, settings: TraceSettings) -> Iterator[TraceExporter]:
    exporter = attach_tracing(flow, settings)
    yield exporter
    exporter.close()


async def test_the_childs_trace_names_its_parents(
    flow: AgentFlow,
    fake_llm: FakeLLM,
    traced: TraceExporter,
    settings: TraceSettings,
) -> None:
    fake_llm.default = Text("hello")
    flow.grant_version(flow.save_workflow(workflow("greet", "nodes:\n  say: {type: llm, prompt: hi}")), by=PERSON)
    run = await run_source(flow, workflow("host", "nodes:\n  call: {type: workflow, workflow: greet}"))
    assert run.status == "succeeded", run.error
    [child] = [record for record in flow.store.list_runs() if record.parent]
    assert traced.flush(FLUSH)
    client = import_mlflow().MlflowClient(settings.tracking_uri)
    tags = client.get_trace(trace_id_for(child.id), display=False).info.tags
    assert tags["agentflow.parent_trace_id"] == trace_id_for(run.id)
    assert tags["agentflow.parent_run_id"] == run.id
    assert tags["agentflow.parent_node_id"] == "call"
    parent_tags = client.get_trace(trace_id_for(run.id), display=False).info.tags
    assert "agentflow.parent_trace_id" not in parent_tags
