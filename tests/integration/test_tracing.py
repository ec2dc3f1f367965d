"""Runs become MLflow traces: real engine, real MLflow on a temporary SQLite store, the fake LLM."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.observability import (
    InMemoryTracer,
    ProcessTracer,
    RunTrace,
    SpanRecord,
    TraceExporter,
    TraceSettings,
    attach_tracing,
)
from agentflow.observability.mlflow_tracer import MlflowTracer, import_mlflow
from agentflow.runtime import AgentFlow
from agentflow.store.base import RunRecord
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import run_source, workflow

CANARY = "canary-5d1e7b20-trace-secret"
FLUSH = 60.0  # seconds: a bound on waiting, never a sleep


def traced_workflow(base_url: str) -> str:
    return workflow(
        "traced",
        f"""
        inputs: {{kind: string, words: {{type: array}}}}
        nodes:
          route:
            type: switch
            cases: [{{when: "inputs.kind == 'loud'", goto: loud}}]
            default: quiet
          loud: {{type: transform, expr: "'LOUD'"}}
          quiet: {{type: transform, expr: "'quiet'"}}
          each: {{type: map, over: inputs.words, concurrency: 1, node: {{type: llm, prompt: "{{{{ item }}}}"}}}}
          call:
            type: tool
            tool: http_request
            args:
              method: POST
              url: "{base_url}/v1/chat/completions?token=${{env:AF_TRACE_TOKEN}}"
              headers: {{Authorization: "Bearer ${{env:AF_TRACE_TOKEN}}"}}
              json: {{model: echo, messages: [{{role: user, content: "echo ${{env:AF_TRACE_TOKEN}}"}}]}}
          summary: {{type: llm, prompt: "Sum up {{{{ each }}}}", needs: [each, loud, quiet, call]}}
        outputs: {{summary: "{{{{ summary }}}}"}}
        """,
    )


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, created once: MLflow's migrations take seconds."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    import_mlflow().MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def settings(tmp_path: Path, mlflow_template: Path) -> TraceSettings:
    mlflow_home = tmp_path / "mlflow"
    mlflow_home.mkdir()
    shutil.copy(mlflow_template, mlflow_home / "mlflow.db")
    return TraceSettings(
        tracking_uri=f"sqlite:///{mlflow_home / 'mlflow.db'}",
        artifact_location=(mlflow_home / "artifacts").as_uri(),
        max_chars=4000,
        in_process=True,  # saves starting a child per test; the first test runs the default
    )


def respond(body: dict[str, Any]) -> Text:
    """Upper-cases prompts, except the tool's request, which it echoes: secret included."""
    prompt = body["messages"][-1]["content"]
    return Text(prompt if prompt.startswith("echo ") else prompt.upper(), usage=(10, 5))


@pytest.fixture
def traced(
    flow: AgentFlow, fake_llm: FakeLLM, settings: TraceSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TraceExporter]:
    monkeypatch.setenv("AGENTFLOW_SECRET_AF_TRACE_TOKEN", CANARY)
    fake_llm.responder = respond
    exporter = attach_tracing(flow, settings)
    yield exporter
    exporter.close()


@pytest.fixture
def traced_in_a_process(
    flow: AgentFlow, fake_llm: FakeLLM, settings: TraceSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TraceExporter]:
    """Tracing as `python app.py` sets it up: MLflow in a child process."""
    monkeypatch.setenv("AGENTFLOW_SECRET_AF_TRACE_TOKEN", CANARY)
    fake_llm.responder = respond
    exporter = attach_tracing(flow, dataclasses.replace(settings, in_process=False))
    assert isinstance(exporter.tracer, ProcessTracer)
    yield exporter
    exporter.close()


def trace_state(exporter: TraceExporter, run_id: str) -> tuple[str | None, str | None, str | None]:
    found = exporter.trace_of(run_id) or {}
    return found.get("trace_id"), found.get("state"), found.get("error")


def tree(spans: list[Any]) -> dict[str, Any]:
    """MLflow spans as a nested structure of what matters to a reader: no ids, no times."""
    from mlflow.tracing.constant import SpanAttributeKey

    children: dict[str | None, list[Any]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)

    def node(span: Any) -> dict[str, Any]:
        attributes = span.attributes
        shown: dict[str, Any] = {"name": span.name, "type": span.span_type, "status": span.status.status_code.value}
        for key in ("agentflow.node_type", "agentflow.attempt", "agentflow.item_index", "agentflow.tool"):
            if key in attributes:
                shown[key.removeprefix("agentflow.")] = attributes[key]
        if SpanAttributeKey.CHAT_USAGE in attributes:
            shown["usage"] = attributes[SpanAttributeKey.CHAT_USAGE]
            shown["model"] = attributes[SpanAttributeKey.MODEL]
            shown["provider"] = attributes[SpanAttributeKey.MODEL_PROVIDER]
        kids = sorted(children.get(span.span_id, []), key=lambda child: child.name)
        if kids:
            shown["children"] = [node(child) for child in kids]
        return shown

    [root] = children[None]
    return node(root)


def llm(status: str = "OK") -> dict[str, Any]:
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    return {
        "name": "openai/test-model",
        "type": "CHAT_MODEL",
        "status": status,
        "usage": usage,
        "model": "openai/test-model",
        "provider": "openai",
    }


EXPECTED_TREE = {
    "name": "traced",
    "type": "CHAIN",
    "status": "OK",
    "children": [
        {
            "name": "call",
            "type": "TASK",
            "status": "OK",
            "node_type": "tool",
            "attempt": 1,
            "children": [{"name": "http_request", "type": "TOOL", "status": "OK", "tool": "http_request"}],
        },
        {
            "name": "each",
            "type": "CHAIN",
            "status": "OK",
            "node_type": "map",
            "attempt": 1,
            "children": [
                {
                    "name": "each[0]",
                    "type": "LLM",
                    "status": "OK",
                    "node_type": "llm",
                    "attempt": 1,
                    "item_index": 0,
                    "children": [llm()],
                },
                {
                    "name": "each[1]",
                    "type": "LLM",
                    "status": "OK",
                    "node_type": "llm",
                    "attempt": 1,
                    "item_index": 1,
                    "children": [llm()],
                },
            ],
        },
        {"name": "loud", "type": "PARSER", "status": "OK", "node_type": "transform", "attempt": 1},
        {"name": "quiet", "type": "PARSER", "status": "UNSET", "node_type": "transform", "attempt": 1},
        {"name": "route", "type": "CHAIN", "status": "OK", "node_type": "switch", "attempt": 1},
        {
            "name": "summary",
            "type": "LLM",
            "status": "OK",
            "node_type": "llm",
            "attempt": 1,
            "children": [llm()],
        },
    ],
}


async def test_a_run_becomes_one_mlflow_trace(
    flow: AgentFlow, fake_llm: FakeLLM, traced_in_a_process: TraceExporter, settings: TraceSettings
) -> None:
    traced = traced_in_a_process
    source = traced_workflow(fake_llm.base_url.removesuffix("/v1"))
    run = await run_source(flow, source, {"kind": "loud", "words": ["a", "b"]})
    assert run.status == "succeeded", run.error
    assert traced.flush(FLUSH)
    assert traced.status() == {"exported": 1, "pending": 0, "failed": 0, "last_error": None}
    trace_id, state, error = trace_state(traced, run.id)
    assert (state, error) == ("exported", None)

    mlflow = import_mlflow()
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name("traced")
    assert experiment is not None
    assert experiment.artifact_location == f"{settings.artifact_location}/traced"
    [found] = client.search_traces(locations=[experiment.experiment_id])
    assert found.info.trace_id == trace_id
    trace = client.get_trace(trace_id, display=False)
    assert tree(trace.data.spans) == EXPECTED_TREE
    assert trace.info.tags["mlflow.traceName"] == "traced"
    assert trace.info.tags["agentflow.run_id"] == run.id
    assert trace.info.state.value == "OK"

    root = next(span for span in trace.data.spans if span.parent_id is None)
    assert root.inputs == {"kind": "loud", "words": ["a", "b"]}
    assert root.outputs == run.outputs
    assert root.attributes["agentflow.version"] == run.version
    assert root.attributes["agentflow.trigger"] == "manual"

    # Usage in MLflow's own attribute, cost at the test prices: $1e-6 per input token, $2e-6 per output token.
    calls = [span for span in trace.data.spans if span.span_type == "CHAT_MODEL"]
    assert len(calls) == 3
    for call in calls:
        assert call.attributes["mlflow.llm.cost"] == pytest.approx(
            {"input_cost": 10e-6, "output_cost": 10e-6, "total_cost": 20e-6}
        )
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"]) == {
        "input_tokens": 30,
        "output_tokens": 15,
        "total_tokens": 45,
    }
    assert json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == pytest.approx(run.cost_usd)
    assert run.cost_usd == pytest.approx(60e-6)

    # Span times nest: every child inside its parent (to the millisecond MLflow keeps).
    by_id = {span.span_id: span for span in trace.data.spans}
    for span in trace.data.spans:
        parent = by_id.get(span.parent_id)
        if parent is not None:
            assert parent.start_time_ns <= span.start_time_ns <= span.end_time_ns <= parent.end_time_ns


async def test_secrets_never_appear_in_a_span(
    flow: AgentFlow, fake_llm: FakeLLM, traced: TraceExporter, settings: TraceSettings, tmp_path: Path
) -> None:
    source = traced_workflow(fake_llm.base_url.removesuffix("/v1"))
    run = await run_source(flow, source, {"kind": "quiet", "words": ["x"]})
    assert run.status == "succeeded", run.error
    assert traced.flush(FLUSH)
    trace_id, _, _ = trace_state(traced, run.id)
    trace = import_mlflow().MlflowClient(settings.tracking_uri).get_trace(trace_id, display=False)
    tool = next(span for span in trace.data.spans if span.name == "call")
    assert "***" in json.dumps(tool.outputs)  # the tool's output did carry the secret: redacted
    for span in trace.data.spans:
        assert CANARY not in json.dumps(span.to_dict(), default=str)
    for path in (tmp_path / "mlflow").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"secret found in {path}"


class Switchable:
    """A tracer that is down until told otherwise: stands for an MLflow outage."""

    def __init__(self, tracer: MlflowTracer) -> None:
        self.tracer, self.down = tracer, True

    def export(self, batch: list[RunTrace]) -> list[str | Exception]:
        if self.down:
            raise ConnectionError("MLflow is down")
        return self.tracer.export(batch)

    def read(self, trace_id: str) -> list[SpanRecord]:
        return self.tracer.read(trace_id)

    def close(self) -> None:
        self.tracer.close()


async def test_an_outage_keeps_runs_pending_then_exports_them(
    flow: AgentFlow, fake_llm: FakeLLM, settings: TraceSettings
) -> None:
    fake_llm.responder = lambda body: Text("ok", usage=(1, 1))
    tracer = Switchable(MlflowTracer(settings))
    exporter = attach_tracing(flow, settings, tracer=tracer)
    try:
        source = workflow("outage", "nodes:\n  say: {type: llm, prompt: hi}")
        runs = [await run_source(flow, source) for _ in range(2)]
        assert [run.status for run in runs] == ["succeeded", "succeeded"]
        assert not exporter.flush(FLUSH)
        status = exporter.status()
        assert (status["exported"], status["pending"], status["failed"]) == (0, 2, 0)
        assert "MLflow is down" in (status["last_error"] or "")
        assert sorted(exporter.backlog()) == sorted(run.id for run in runs)

        tracer.down = False
        assert exporter.flush(FLUSH)
        assert exporter.status() == {"exported": 2, "pending": 0, "failed": 0, "last_error": None}
        assert exporter.backlog() == []
        for run in runs:
            trace_id, state, _ = trace_state(exporter, run.id)
            assert state == "exported"
            assert [span.name for span in tracer.read(trace_id or "")][:2] == ["outage", "say"]
    finally:
        exporter.close()


async def test_unreachable_mlflow_server_then_the_backlog_is_exported_at_next_start(
    flow: AgentFlow, fake_llm: FakeLLM, settings: TraceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    fake_llm.responder = lambda body: Text("ok", usage=(1, 1))
    unreachable = TraceSettings(tracking_uri="http://127.0.0.1:9", max_chars=settings.max_chars)
    exporter = attach_tracing(flow, unreachable)
    source = workflow("offline", "nodes:\n  say: {type: llm, prompt: hi}")
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert not exporter.flush(FLUSH)
    status = exporter.status()
    assert status["pending"] == 1
    assert "Connection refused" in (status["last_error"] or "")
    exporter.close()  # the process stops with the trace still pending
    assert trace_state(exporter, run.id)[1] in (None, "pending")

    later = attach_tracing(flow, settings)  # MLflow is back (here: another tracking URI)
    try:
        assert later.backlog() == [run.id]
        assert later.flush(FLUSH)
        trace_id, state, _ = trace_state(later, run.id)
        assert state == "exported"
        trace = import_mlflow().MlflowClient(settings.tracking_uri).get_trace(trace_id, display=False)
        assert trace.info.tags["agentflow.run_id"] == run.id
    finally:
        later.close()


def test_exporting_a_run_twice_writes_one_trace(flow: AgentFlow, settings: TraceSettings) -> None:
    from agentflow.observability import build_run_trace

    run = RunRecord(id="run-twice", workflow="twice", version="v1", status="succeeded", created_at=1000.0)
    events: list[dict[str, Any]] = [
        {"id": 1, "type": "run_started", "at": 1000.0},
        {"id": 2, "type": "run_finished", "at": 1001.0, "status": "succeeded"},
    ]
    tracer = MlflowTracer(settings)
    first = tracer.export([build_run_trace(run, events)])
    second = tracer.export([build_run_trace(run, events)])
    assert first == second == ["tr-" + first[0].removeprefix("tr-")]
    experiment_id = tracer.experiment_id("twice")
    assert len(tracer.client.search_traces(locations=[experiment_id])) == 1


class Picky:
    """Refuses the traces of the runs whose workflow it is told to, like a backend rejecting bad data."""

    def __init__(self) -> None:
        self.tracer, self.refuse = InMemoryTracer(), {"picky-bad"}

    def export(self, batch: list[RunTrace]) -> list[str | Exception]:
        accepted = self.tracer.export([trace for trace in batch if trace.workflow not in self.refuse])
        results: list[str | Exception] = []
        for trace in batch:
            results.append(ValueError("span too large") if trace.workflow in self.refuse else accepted.pop(0))
        return results

    def read(self, trace_id: str) -> list[SpanRecord]:
        return self.tracer.read(trace_id)

    def close(self) -> None:
        return None


async def test_a_run_refused_every_time_is_marked_failed_and_said_so(flow: AgentFlow, settings: TraceSettings) -> None:
    tracer = Picky()
    exporter = TraceExporter(flow.store, tracer, settings, max_attempts=2, backoff=(0.0, 0.0))
    exporter.unsubscribe = flow.bus.subscribe(exporter)
    exporter.start()
    try:
        bad = await run_source(flow, workflow("picky-bad", "nodes:\n  t: {type: transform, expr: \"'x'\"}"))
        good = await run_source(flow, workflow("picky-good", "nodes:\n  t: {type: transform, expr: \"'y'\"}"))
        assert exporter.flush(FLUSH)
        assert exporter.status() == {
            "exported": 1,
            "pending": 0,
            "failed": 1,
            "last_error": "ValueError: span too large",
        }
        assert exporter.failures() == [(bad.id, "ValueError: span too large")]
        assert trace_state(exporter, bad.id) == (None, "failed", "ValueError: span too large")
        assert trace_state(exporter, good.id)[1] == "exported"
        assert exporter.backlog() == []  # given up on: not retried at the next start

        tracer.refuse.clear()  # the cause is fixed
        assert exporter.retry_failed() == 1
        assert exporter.flush(FLUSH)
        assert exporter.status()["exported"] == 2
        trace_id = trace_state(exporter, bad.id)[0]
        assert [span.name for span in tracer.read(trace_id or "")] == ["picky-bad", "t"]
    finally:
        exporter.close()


def test_importing_observability_does_not_import_mlflow() -> None:
    code = "import sys, agentflow.observability; print('mlflow' in sys.modules, 'litellm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
