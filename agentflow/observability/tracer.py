"""A run's trace, built from the store alone, and the `Tracer` protocol every tracing backend implements.

The span tree: the run (root) → one span per node execution (map branches under
their map's span) → LLM and tool calls under the node execution that made them.
Everything that leaves through a tracer is built here, so redaction and
truncation happen once, whatever the backend.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from agentflow.secrets import redact
from agentflow.settings import Price, SettingsError
from agentflow.spec.expressions import ENV_REF
from agentflow.store.base import RunRecord

SpanStatus = Literal["OK", "ERROR", "UNSET"]
# MLflow's span types (mlflow.entities.SpanType), as plain strings: no import of mlflow here.
NODE_SPAN_TYPES = {
    "llm": "LLM",
    "agent": "AGENT",
    "tool": "TASK",
    "transform": "PARSER",
    "switch": "CHAIN",
    "map": "CHAIN",
    "approval": "GUARDRAIL",
}
RUN_SPAN_TYPE, LLM_SPAN_TYPE, TOOL_SPAN_TYPE = "CHAIN", "CHAT_MODEL", "TOOL"
RECALL_SPAN_TYPE, MEMORY_SPAN_TYPE = "RETRIEVER", "MEMORY"
DEFAULT_MAX_CHARS = 4000
_EPSILON = 0.001  # seconds: `at` and `started_at` come from the same clock but floats round


@dataclass(frozen=True, slots=True)
class TraceSettings:
    tracking_uri: str
    artifact_location: str | None = None
    max_chars: int = DEFAULT_MAX_CHARS
    in_process: bool = False
    """Export from a thread of this process instead of a child process (saves memory, costs run throughput)."""

    @classmethod
    def from_env(cls, home: Path, environ: Mapping[str, str] | None = None) -> TraceSettings:
        """`MLFLOW_TRACKING_URI` if set, else a SQLite MLflow store in the data directory."""
        env = os.environ if environ is None else environ
        raw = env.get("AGENTFLOW_TRACE_MAX_CHARS", "").strip()
        if raw and not (raw.isascii() and raw.isdigit() and int(raw) >= 100):
            raise SettingsError(f"AGENTFLOW_TRACE_MAX_CHARS={raw!r} must be a whole number >= 100, e.g. 4000")
        max_chars = int(raw) if raw else DEFAULT_MAX_CHARS
        in_process = env.get("AGENTFLOW_TRACE_IN_PROCESS", "").strip().lower() in ("1", "true", "yes")
        uri = env.get("MLFLOW_TRACKING_URI", "").strip()
        if uri:
            return cls(uri, None, max_chars, in_process)
        home = home.resolve()
        return cls(f"sqlite:///{home / 'mlflow.db'}", (home / "mlflow-artifacts").as_uri(), max_chars, in_process)


@dataclass(frozen=True, slots=True)
class LLMUsage:
    model: str
    provider: str | None
    input_tokens: int
    output_tokens: int
    cost: dict[str, float]
    """USD: `total_cost`, plus `input_cost`/`output_cost` when the model's prices are known."""


@dataclass(slots=True)
class SpanRecord:
    key: str
    """Unique within the trace and stable across exports of the same run."""
    parent: str | None
    name: str
    span_type: str
    start: float
    end: float
    status: SpanStatus = "OK"
    error: str | None = None
    inputs: Any = None
    outputs: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)
    usage: LLMUsage | None = None


@dataclass(slots=True)
class RunTrace:
    run_id: str
    workflow: str
    version: str
    status: str
    spans: list[SpanRecord]
    """The root span first; every parent before its children."""

    @property
    def trace_id(self) -> str:
        return trace_id_for(self.run_id)


class Tracer(Protocol):
    def export(self, batch: list[RunTrace]) -> list[str | Exception]:
        """Write the traces; one trace id (or the error) per run, in order. Raises when the backend is down."""
        ...

    def read(self, trace_id: str) -> list[SpanRecord]:
        """The spans of an exported trace, as the backend stored them."""
        ...

    def close(self) -> None: ...


def trace_id_for(run_id: str) -> str:
    """A run's trace id, derived from the run id so that exporting a run twice writes one trace."""
    return "tr-" + hashlib.sha256(run_id.encode()).hexdigest()[:32]


class InMemoryTracer:
    """The reference tracer: keeps traces in a dict (tests, and a model for new backends)."""

    def __init__(self) -> None:
        self.traces: dict[str, RunTrace] = {}

    def export(self, batch: list[RunTrace]) -> list[str | Exception]:
        for trace in batch:
            self.traces[trace.trace_id] = trace
        return [trace.trace_id for trace in batch]

    def read(self, trace_id: str) -> list[SpanRecord]:
        return list(self.traces[trace_id].spans)

    def close(self) -> None:
        return None


# -- building a trace from stored events ------------------------------------------


def secrets_in(source: str, environ: Mapping[str, str], extra: Iterable[str | None] = ()) -> set[str]:
    """Values of the `${env:NAME}` variables a workflow references, plus `extra`: never to be exported."""
    found = {environ[name] for name in ENV_REF.findall(source) if environ.get(name)}
    return found | {value for value in extra if value}


def build_run_trace(
    run: RunRecord,
    events: list[dict[str, Any]],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    secrets: Collection[str] = (),
    prices: Mapping[str, Price] | None = None,
) -> RunTrace:
    """The span tree of one finished run, from its record and its stored events (in stored order)."""
    clean = _Cleaner(secrets, max_chars)
    restarts = [event["at"] for event in events if event["type"] == "run_started"]
    finished = next((event for event in reversed(events) if event["type"] == "run_finished"), None)
    times = [event["at"] for event in events]
    start = min([*restarts, *times] or [run.started_at or run.created_at])
    end = finished["at"] if finished else run.finished_at or max(times or [start])
    root = SpanRecord(
        key="run",
        parent=None,
        name=run.workflow,
        span_type=RUN_SPAN_TYPE,
        start=start,
        end=end,
        status="OK" if run.status == "succeeded" else "ERROR",
        error=clean(run.error),
        inputs=clean(run.inputs),
        outputs=clean(run.outputs),
        attributes={
            "agentflow.run_id": run.id,
            "agentflow.workflow": run.workflow,
            "agentflow.version": run.version,
            "agentflow.trigger": run.trigger,
            "agentflow.status": run.status,
            "agentflow.tokens": run.tokens,
            "agentflow.cost_usd": run.cost_usd,
            "agentflow.steps": run.steps,
        },
    )
    if run.parent:
        # A sub-workflow's trace names its parent's: MLflow links them by these tags.
        root.attributes.update(
            {
                "agentflow.parent_run_id": run.parent.get("run_id"),
                "agentflow.parent_node_id": run.parent.get("node_id"),
                "agentflow.parent_trace_id": trace_id_for(str(run.parent.get("run_id"))),
            }
        )
    prompts = linked_prompts(events)
    if prompts:
        root.attributes["agentflow.linked_prompts"] = json.dumps(prompts)
    nodes = _node_spans(events, restarts, end, clean)
    _attach_branches(nodes)
    calls = _call_spans(events, nodes, prices or {}, clean)
    for span in (*nodes, *calls):
        span.parent = span.parent or "run"
    return RunTrace(run.id, run.workflow, run.version, run.status, _parents_first(root, [*nodes, *calls]))


def _parents_first(root: SpanRecord, spans: list[SpanRecord]) -> list[SpanRecord]:
    children: dict[str | None, list[SpanRecord]] = {}
    for span in spans:
        children.setdefault(span.parent, []).append(span)
    ordered, frontier = [root], [root]
    while frontier:
        frontier = [child for span in frontier for child in children.get(span.key, [])]
        ordered.extend(frontier)
    return ordered


class _Cleaner:
    """Redacts secrets, then truncates to `max_chars` (a value's JSON form when it is not text)."""

    def __init__(self, secrets: Collection[str], max_chars: int) -> None:
        self.secrets = sorted((secret for secret in secrets if secret), key=len, reverse=True)
        self.max_chars = max_chars

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        value = self._redact(value)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        if len(text) <= self.max_chars:
            return value
        return f"{text[: self.max_chars]}… [truncated: {len(text)} chars]"

    def _redact(self, value: Any) -> Any:
        return redact(value, self.secrets)


def _clean_message(message: Any, clean: _Cleaner) -> Any:
    """A chat message with its text cleaned, keeping the shape MLflow renders as a conversation."""
    if not isinstance(message, dict):
        return clean(message)
    return {key: clean(value) if key in ("content", "tool_calls") else value for key, value in message.items()}


def _node_key(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["node_id"], event.get("item_index"), event.get("attempt", 1), event.get("iteration", 0))


_NODE_STATUS: dict[str, SpanStatus] = {"succeeded": "OK", "skipped": "UNSET"}


def _node_span(event: dict[str, Any], start: float, end: float, clean: _Cleaner) -> SpanRecord:
    node_type = event["node_type"]
    status = event.get("status", "interrupted")
    item_index = event.get("item_index")
    attributes = {
        "agentflow.node_id": event["node_id"],
        "agentflow.node_type": node_type,
        "agentflow.status": status,
        "agentflow.attempt": event.get("attempt", 1),
        "agentflow.iteration": event.get("iteration", 0),
        "agentflow.latency_ms": round(event.get("latency_ms") or (end - start) * 1000, 3),
    }
    if item_index is not None:
        attributes["agentflow.item_index"] = item_index
    for name in ("tokens", "cost_usd", "model", "variant", "pinned", "reused_from"):
        if event.get(name):
            attributes[f"agentflow.{name}"] = event[name]
    return SpanRecord(
        key=f"node-{event['id']}",
        parent=None,
        name=event["node_id"] if item_index is None else f"{event['node_id']}[{item_index}]",
        span_type=NODE_SPAN_TYPES.get(node_type, "CHAIN"),
        start=start,
        end=end,
        status=_NODE_STATUS.get(status, "ERROR"),
        error=clean(event.get("error")) if status != "interrupted" else "no finish recorded: cancelled or interrupted",
        outputs=clean(event.get("output")),
        attributes=attributes,
    )


def _node_spans(
    events: list[dict[str, Any]], restarts: list[float], run_end: float, clean: _Cleaner
) -> list[SpanRecord]:
    open_starts: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    approvals: dict[str, float] = {}
    spans: list[SpanRecord] = []
    for event in events:
        kind = event["type"]
        if kind == "node_started":
            open_starts.setdefault(_node_key(event), []).append(event)
        elif kind == "approval_requested":
            approvals[event["node_id"]] = event["at"]
        elif kind == "node_finished":
            starts = open_starts.get(_node_key(event))
            started = starts.pop() if starts else None
            # Skipped nodes never start; approvals start when they ask.
            start = event.get("started_at") or (started or {}).get("at") or approvals.get(event["node_id"])
            spans.append(_node_span(event, min(start or event["at"], event["at"]), event["at"], clean))
    for starts in open_starts.values():
        for started in starts:
            # A node that never finished ends when the run resumed (after a crash) or ended.
            end = min([at for at in restarts if at > started["at"]] or [run_end])
            spans.append(_node_span(started, started["at"], max(end, started["at"]), clean))
    spans.sort(key=lambda span: (span.start, span.key))
    return spans


def _attach_branches(nodes: list[SpanRecord]) -> None:
    """Map branches go under the execution of their map that was running when they started."""
    maps = [span for span in nodes if span.attributes["agentflow.node_type"] == "map"]
    for span in nodes:
        if "agentflow.item_index" not in span.attributes:
            continue
        node_id = span.attributes["agentflow.node_id"]
        candidates = [
            parent
            for parent in maps
            if parent.attributes["agentflow.node_id"] == node_id and parent.start <= span.start + _EPSILON
        ]
        if candidates:
            span.parent = max(candidates, key=lambda parent: parent.start).key


def _owner(nodes: list[SpanRecord], node_id: str, at: float) -> SpanRecord | None:
    """The execution of `node_id` that made a call ending at `at`: the one that finished next."""
    mine = [span for span in nodes if span.attributes["agentflow.node_id"] == node_id]
    leaves = [span for span in mine if span.attributes["agentflow.node_type"] != "map"] or mine
    running = [span for span in leaves if span.start - _EPSILON <= at <= span.end + _EPSILON]
    if running:
        return min(running, key=lambda span: (span.end, span.key))
    before = [span for span in leaves if span.start <= at]
    return max(before, key=lambda span: span.start) if before else None


def _split_cost(cost: float, input_tokens: int, output_tokens: int, price: Price | None) -> dict[str, float]:
    weights = (input_tokens * price.input_per_token, output_tokens * price.output_per_token) if price else (0, 0)
    if sum(weights) <= 0:
        return {"total_cost": cost}
    input_cost = cost * weights[0] / sum(weights)
    return {"input_cost": input_cost, "output_cost": cost - input_cost, "total_cost": cost}


def _memory_span(event: dict[str, Any], nodes: list[SpanRecord], clean: _Cleaner) -> SpanRecord:
    """A memory read (a retriever span: query in, memories out) or write, inside its node's span."""
    owner = _owner(nodes, event["node_id"], event["at"])
    start = event["at"] - event["latency_ms"] / 1000
    if owner is not None:
        start = max(start, owner.start)
    recall = event["type"] == "memory_recall"
    span = SpanRecord(
        key=f"memory-{event['id']}",
        parent=owner.key if owner else None,
        name="memory.recall" if recall else f"memory.{event['operation']}",
        span_type=RECALL_SPAN_TYPE if recall else MEMORY_SPAN_TYPE,
        start=min(start, event["at"]),
        end=event["at"],
        status="ERROR" if event.get("error") else "OK",
        error=clean(event.get("error")),
        attributes={"agentflow.node_id": event["node_id"], "agentflow.latency_ms": round(event["latency_ms"], 3)},
    )
    if recall:
        span.attributes["agentflow.memory.scopes"] = list(event["scopes"])
        span.inputs = {"query": clean(event["query"])}
        span.outputs = clean(event["items"])
    else:
        span.attributes["agentflow.memory.scope"] = event["scope"]
        span.inputs = {"id": event["item_id"], "text": clean(event.get("text"))}
    return span


def prompt_refs(prompt_ref: str | None) -> list[tuple[str, str]]:
    """(name, version) of each registry prompt in an LLMCalled `prompt_ref` ("a@3, b@1")."""
    pairs = [ref.strip().rpartition("@") for ref in (prompt_ref or "").split(",") if ref.strip()]
    return [(name, version) for name, _, version in pairs if name]


def prompt_attributes(event: dict[str, Any]) -> dict[str, Any]:
    """A model call's registry prompt (`prompt.name`, `prompt.version`: the first, the main one) and variant."""
    attributes: dict[str, Any] = {}
    refs = prompt_refs(event.get("prompt_ref"))
    if refs:
        attributes.update({"prompt.name": refs[0][0], "prompt.version": refs[0][1]})
        attributes["agentflow.prompt_ref"] = event["prompt_ref"]
    if event.get("variant"):
        attributes["agentflow.variant"] = event["variant"]
    return attributes


def linked_prompts(events: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every registry prompt the run's calls used, as MLflow's `mlflow.linkedPrompts` trace tag lists them."""
    calls = [event for event in events if event["type"] == "llm_call"]
    seen = dict.fromkeys(pair for event in calls for pair in prompt_refs(event.get("prompt_ref")))
    return [{"name": name, "version": version} for name, version in seen]


def _call_spans(
    events: list[dict[str, Any]], nodes: list[SpanRecord], prices: Mapping[str, Price], clean: _Cleaner
) -> list[SpanRecord]:
    spans = []
    for event in events:
        kind = event["type"]
        if kind in ("memory_recall", "memory_write"):
            spans.append(_memory_span(event, nodes, clean))
            continue
        if kind not in ("llm_call", "tool_call"):
            continue
        owner = _owner(nodes, event["node_id"], event["at"])
        start = event["at"] - event["latency_ms"] / 1000
        if owner is not None:
            start = max(start, owner.start)  # clocks differ by microseconds; keep the child inside
        span = SpanRecord(
            key=f"call-{event['id']}",
            parent=owner.key if owner else None,
            name=event["model"] if kind == "llm_call" else event["tool"],
            span_type=LLM_SPAN_TYPE if kind == "llm_call" else TOOL_SPAN_TYPE,
            start=min(start, event["at"]),
            end=event["at"],
            status="ERROR" if event.get("error") else "OK",
            error=clean(event.get("error")),
            attributes={"agentflow.node_id": event["node_id"], "agentflow.latency_ms": round(event["latency_ms"], 3)},
        )
        if kind == "llm_call":
            # The prompt and reply as the engine recorded them (redacted, truncated), cleaned again for the trace.
            if event.get("prompt") is not None:
                span.inputs = {"messages": [_clean_message(message, clean) for message in event["prompt"]]}
            if event.get("reply") is not None:
                span.outputs = clean(event["reply"])
            span.attributes.update(prompt_attributes(event))
            input_tokens, output_tokens = event["input_tokens"], event["output_tokens"]
            span.usage = LLMUsage(
                model=event["model"],
                provider=event.get("provider"),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost=_split_cost(event["cost_usd"], input_tokens, output_tokens, prices.get(event["model"])),
            )
        else:
            span.attributes["agentflow.tool"] = event["tool"]
            span.inputs = clean(event.get("arguments"))
            span.outputs = clean(event.get("result"))
        spans.append(span)
    return spans
