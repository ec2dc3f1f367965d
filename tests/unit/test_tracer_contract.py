"""The tracer contract: every Tracer gives back the span tree it was given. Also how that tree is built."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agentflow.observability import (
    InMemoryTracer,
    ProcessTracer,
    RunTrace,
    SpanRecord,
    Tracer,
    TraceSettings,
    build_run_trace,
    trace_id_for,
)
from agentflow.observability.process import TracerUnavailable
from agentflow.settings import Price
from agentflow.store.base import RunRecord

T0 = 1_790_000_000.0
SECRET = "s3cr3t-token-value"
PRICES = {"openai/test-model": Price(input_per_token=1e-6, output_per_token=2e-6)}


def event(event_id: int, kind: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "run_id": "run-1", "at": T0 + at, **fields}


def node(kind: str, node_id: str, node_type: str, at: float, **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, {"node_id": node_id, "node_type": node_type, "at": at, **fields}


def sample_events() -> list[dict[str, Any]]:
    """A failed run: an LLM node, a map whose first branch is retried and calls a tool, a skipped node,
    a node that never finished."""
    script: list[tuple[str, dict[str, Any]]] = [
        ("run_started", {"at": 0.0, "workflow": "contract", "version": "v1"}),
        node("node_started", "plan", "llm", 0.01),
        (
            "llm_call",
            {
                "node_id": "plan",
                "at": 0.05,
                "model": "openai/test-model",
                "provider": "openai",
                "input_tokens": 100,
                "output_tokens": 20,
                "cost_usd": 140e-6,
                "latency_ms": 30.0,
            },
        ),
        node("node_finished", "plan", "llm", 0.06, status="succeeded", started_at=T0 + 0.01, output=["a", "b"]),
        node("node_started", "each", "map", 0.07),
        node("node_started", "each", "tool", 0.08, item_index=0),
        node("node_finished", "each", "tool", 0.09, item_index=0, status="failed", started_at=T0 + 0.08, error="boom"),
        node("node_started", "each", "tool", 0.10, item_index=0, attempt=2),
        ("tool_call", {"node_id": "each", "tool": "http_request", "at": 0.12, "latency_ms": 10.0}),
        node("node_finished", "each", "tool", 0.13, item_index=0, attempt=2, status="succeeded", started_at=T0 + 0.10),
        node("node_started", "each", "tool", 0.14, item_index=1),
        (
            "tool_call",
            {"node_id": "each", "tool": "http_request", "at": 0.15, "latency_ms": 5.0, "error": f"401 for {SECRET}"},
        ),
        node("node_finished", "each", "tool", 0.16, item_index=1, status="succeeded", started_at=T0 + 0.14),
        node("node_finished", "each", "map", 0.2, status="succeeded", started_at=T0 + 0.075, output=[1, 2]),
        node("node_finished", "skipped", "transform", 0.21, status="skipped"),
        node("node_started", "late", "agent", 0.22),
        ("run_finished", {"at": 0.3, "status": "failed", "error": "node 'late' failed"}),
    ]
    return [event(index, kind, fields.pop("at"), **fields) for index, (kind, fields) in enumerate(script, start=1)]


def sample_run(run_id: str = "run-1", workflow: str = "contract") -> RunRecord:
    return RunRecord(
        id=run_id,
        workflow=workflow,
        version="v1",
        status="failed",
        trigger="webhook",
        inputs={"question": "x" * 50, "token": SECRET},
        error="node 'late' failed",
        tokens=120,
        cost_usd=140e-6,
        steps=5,
        created_at=T0,
    )


def sample_trace(run_id: str = "run-1", workflow: str = "contract") -> RunTrace:
    return build_run_trace(
        sample_run(run_id, workflow), sample_events(), max_chars=200, secrets={SECRET}, prices=PRICES
    )


def normalized(spans: list[SpanRecord]) -> dict[str, Any]:
    """The tree without ids; times in ms from the root's start."""
    [root] = [span for span in spans if span.parent is None]
    children: dict[str | None, list[SpanRecord]] = {}
    for span in spans:
        children.setdefault(span.parent, []).append(span)

    def shape(span: SpanRecord) -> dict[str, Any]:
        kids = sorted(children.get(span.key, []), key=lambda child: (round(child.start - root.start, 3), child.name))
        return {
            "name": span.name,
            "type": span.span_type,
            "status": span.status,
            "error": span.error,
            "inputs": span.inputs,
            "outputs": span.outputs,
            "attributes": span.attributes,
            "usage": asdict(span.usage) if span.usage else None,
            "ms": (round((span.start - root.start) * 1000), round((span.end - root.start) * 1000)),
            "children": [shape(child) for child in kids],
        }

    return shape(root)


def outline(tree: dict[str, Any], depth: int = 0) -> list[str]:
    line = f"{'  ' * depth}{tree['name']} {tree['type']} {tree['status']} {tree['ms'][0]}-{tree['ms'][1]}"
    return [line] + [text for child in tree["children"] for text in outline(child, depth + 1)]


# -- every implementation ---------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, created once: MLflow's migrations take seconds."""
    from agentflow.observability.mlflow_tracer import import_mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    import_mlflow().MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(params=["memory", "mlflow", "mlflow-in-a-process"])
def tracer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tracer]:
    if request.param == "memory":
        yield InMemoryTracer()
        return
    from agentflow.observability.mlflow_tracer import MlflowTracer

    database = tmp_path / "mlflow.db"
    shutil.copy(request.getfixturevalue("mlflow_template"), database)
    settings = TraceSettings(f"sqlite:///{database}", (tmp_path / "artifacts").as_uri())
    implementation: Tracer = MlflowTracer(settings)
    if request.param == "mlflow-in-a-process":
        implementation = ProcessTracer(partial(MlflowTracer, settings))
    yield implementation
    implementation.close()


def test_the_span_tree_comes_back_as_it_was_exported(tracer: Tracer) -> None:
    traces = [sample_trace("run-1"), sample_trace("run-2"), sample_trace("run-3", workflow="other")]
    assert tracer.export(traces) == [trace_id_for("run-1"), trace_id_for("run-2"), trace_id_for("run-3")]
    for trace in traces:
        assert normalized(tracer.read(trace.trace_id)) == normalized(trace.spans)


def test_exporting_again_rewrites_the_same_trace(tracer: Tracer) -> None:
    trace = sample_trace()
    assert tracer.export([trace]) == tracer.export([sample_trace()]) == [trace.trace_id]
    assert len(tracer.read(trace.trace_id)) == len(trace.spans)


def test_an_empty_batch_exports_nothing(tracer: Tracer) -> None:
    assert tracer.export([]) == []


# -- how the tree is built -----------------------------------------------------------------


def test_the_tree_of_a_run() -> None:
    assert outline(normalized(sample_trace().spans)) == [
        "contract CHAIN ERROR 0-300",
        "  plan LLM OK 10-60",
        "    openai/test-model CHAT_MODEL OK 20-50",
        "  each CHAIN OK 75-200",
        "    each[0] TASK ERROR 80-90",
        "    each[0] TASK OK 100-130",
        "      http_request TOOL OK 110-120",
        "    each[1] TASK OK 140-160",
        "      http_request TOOL ERROR 145-150",
        "  skipped PARSER UNSET 210-210",
        "  late AGENT ERROR 220-300",
    ]


def test_attributes_usage_and_cost() -> None:
    spans = {(span.name, span.attributes.get("agentflow.attempt")): span for span in sample_trace().spans}
    root = spans[("contract", None)]
    assert root.attributes == {
        "agentflow.run_id": "run-1",
        "agentflow.workflow": "contract",
        "agentflow.version": "v1",
        "agentflow.trigger": "webhook",
        "agentflow.status": "failed",
        "agentflow.tokens": 120,
        "agentflow.cost_usd": 140e-6,
        "agentflow.steps": 5,
    }
    assert root.error == "node 'late' failed"
    retried = spans[("each[0]", 2)]
    assert retried.attributes["agentflow.item_index"] == 0
    assert spans[("each[0]", 1)].error == "boom"
    assert spans[("late", 1)].error == "no finish recorded: cancelled or interrupted"
    [call] = [span for span in sample_trace().spans if span.usage]
    assert call.usage is not None
    assert (call.usage.model, call.usage.provider, call.usage.input_tokens, call.usage.output_tokens) == (
        "openai/test-model",
        "openai",
        100,
        20,
    )
    # Split at the model's prices (100 x $1e-6 in, 20 x $2e-6 out); the total is the recorded cost.
    assert call.usage.cost == pytest.approx({"input_cost": 100e-6, "output_cost": 40e-6, "total_cost": 140e-6})


def test_cost_without_known_prices_is_the_total_only() -> None:
    trace = build_run_trace(sample_run(), sample_events())
    [call] = [span for span in trace.spans if span.usage]
    assert call.usage is not None and call.usage.cost == {"total_cost": 140e-6}


def test_secrets_are_redacted_and_values_truncated() -> None:
    trace = sample_trace()
    text = repr([asdict(span) for span in trace.spans])
    assert SECRET not in text
    root = trace.spans[0]
    assert root.inputs == {"question": "x" * 50, "token": "***"}
    failed_call = next(span for span in trace.spans if span.name == "http_request" and span.error)
    assert failed_call.error == "401 for ***"
    long = build_run_trace(RunRecord(id="r", workflow="w", version="v", inputs={"text": "y" * 5000}), [], max_chars=100)
    shown = long.spans[0].inputs
    assert isinstance(shown, str) and shown.startswith('{"text": "yyy') and shown.endswith("[truncated: 5012 chars]")
    assert len(shown) < 130


def test_a_run_cancelled_before_it_started_is_a_lone_root() -> None:
    run = RunRecord(id="r", workflow="w", version="v", status="cancelled", created_at=T0, finished_at=T0 + 2)
    [root] = build_run_trace(run, []).spans
    assert (root.name, root.status, root.start, root.end) == ("w", "ERROR", T0, T0 + 2)


def test_calls_of_concurrent_map_branches_go_to_the_branch_that_finished_next() -> None:
    script = [
        event(1, "run_started", 0.0),
        event(2, "node_started", 0.01, node_id="m", node_type="map"),
        event(3, "node_started", 0.02, node_id="m", node_type="llm", item_index=0),
        event(4, "node_started", 0.02, node_id="m", node_type="llm", item_index=1),
        *(
            event(5 + index, "llm_call", at, node_id="m", model="x", provider=None, input_tokens=1, output_tokens=1)
            | {"cost_usd": 0.0, "latency_ms": 5.0}
            for index, at in enumerate((0.05, 0.08))
        ),
        event(7, "node_finished", 0.051, node_id="m", node_type="llm", item_index=1, status="succeeded"),
        event(8, "node_finished", 0.081, node_id="m", node_type="llm", item_index=0, status="succeeded"),
        event(9, "node_finished", 0.09, node_id="m", node_type="map", status="succeeded"),
        event(10, "run_finished", 0.1, status="succeeded"),
    ]
    for item in script:
        if item["type"] == "node_finished" and item["node_type"] != "map":
            item["started_at"] = T0 + 0.02
    trace = build_run_trace(RunRecord(id="run-1", workflow="w", version="v", status="succeeded"), script)
    assert outline(normalized(trace.spans)) == [
        "w CHAIN OK 0-100",
        "  m CHAIN OK 10-90",
        "    m[0] LLM OK 20-81",
        "      x CHAT_MODEL OK 75-80",
        "    m[1] LLM OK 20-51",
        "      x CHAT_MODEL OK 45-50",
    ]


def test_a_dead_tracing_process_is_reported_then_replaced() -> None:
    tracer = ProcessTracer(InMemoryTracer)
    try:
        first, second = sample_trace("run-1"), sample_trace("run-2")
        assert tracer.export([first]) == [first.trace_id]
        pid = tracer.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # Whether the kill lands before the next call (a fresh child, silently) or during it (reported, and
        # the call after it gets a fresh child) is the kernel's timing: both must end with a new process.
        try:
            exported = tracer.export([second])
        except TracerUnavailable as exc:
            assert "the tracing process stopped" in str(exc)
            exported = tracer.export([second])
        assert exported == [second.trace_id]
        assert tracer.pid not in (None, pid)
        with pytest.raises(LookupError):
            tracer.read(first.trace_id)  # it died with the old process's memory
    finally:
        tracer.close()
    assert tracer.pid is None
