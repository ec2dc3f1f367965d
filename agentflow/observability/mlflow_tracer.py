"""The MLflow tracer: one experiment per workflow; a batch of runs is written in one `log_spans` call each.

MLflow's own path (`mlflow.start_span` and its async queue) ends every trace
with a chain of synchronous store calls; here the finished spans are built as
MLflow `Span` entities with their recorded times and handed to the tracking
store's span API, which writes many traces in one transaction. Trace and span
ids derive from the run id, so exporting a run again rewrites the same trace.
mlflow is imported on first use only: never at CLI or `validate` time.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any
from urllib.parse import quote

from agentflow.observability.tracer import LLMUsage, RunTrace, SpanRecord, TraceSettings

_IMPORT_LOCK = threading.Lock()
_TAG_PREFIX = "mlflow.traceTag."  # SpanAttributeKey.TRACE_TAG_PREFIX: log_spans turns these into trace tags
_PARENT_TAGS = ("agentflow.parent_run_id", "agentflow.parent_node_id", "agentflow.parent_trace_id")


def import_mlflow() -> Any:
    # Offline, LiteLLM's price-map download can deadlock mlflow's import (see FACTS.md): read the local map.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with _IMPORT_LOCK:
        import mlflow

    return mlflow


def span_id_for(run_id: str, key: str) -> int:
    return int(hashlib.sha256(f"{run_id}/{key}".encode()).hexdigest()[:16], 16) or 1


class MlflowTracer:
    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self._experiments: dict[str, str] = {}
        self._client: Any = None
        self._spans: Any = None

    @property
    def client(self) -> Any:
        """An `mlflow.MlflowClient` on this tracer's tracking URI."""
        if self._client is None:
            mlflow = import_mlflow()
            from mlflow.tracing.client import TracingClient

            self._spans = TracingClient(self.settings.tracking_uri)
            self._client = mlflow.MlflowClient(self.settings.tracking_uri)
        return self._client

    def experiment_id(self, workflow: str) -> str:
        """The workflow's experiment, created on first use (and restored if someone deleted it)."""
        if workflow in self._experiments:
            return self._experiments[workflow]
        from mlflow.exceptions import MlflowException

        client = self.client
        experiment = client.get_experiment_by_name(workflow)
        if experiment is None:
            root = self.settings.artifact_location
            try:
                experiment_id = client.create_experiment(
                    workflow,
                    # Workflow names are slugs. Without a location, a SQLite store puts artifacts in ./mlruns.
                    artifact_location=f"{root.rstrip('/')}/{quote(workflow, safe='')}" if root else None,
                    tags={"agentflow.workflow": workflow},
                )
            except MlflowException:  # created meanwhile by another process
                experiment = client.get_experiment_by_name(workflow)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)
        self._experiments[workflow] = experiment_id
        return experiment_id

    def export(self, batch: list[RunTrace]) -> list[str | Exception]:
        results: list[str | Exception | None] = [None] * len(batch)
        groups: dict[str, list[int]] = {}
        for index, trace in enumerate(batch):
            groups.setdefault(trace.workflow, []).append(index)
        failures: list[Exception] = []
        for workflow, indexes in groups.items():
            spans: list[Any] = []
            logged: list[int] = []
            try:
                experiment_id = self.experiment_id(workflow)
                for index in indexes:
                    try:
                        spans.extend(self.to_mlflow(batch[index]))
                        logged.append(index)
                    except Exception as exc:  # one bad run must not keep the others out
                        results[index] = exc
                self._spans.log_spans(experiment_id, spans)
            except Exception as exc:
                failures.append(exc)
                for index in indexes:
                    results[index] = results[index] or exc
                continue
            for index in logged:
                results[index] = batch[index].trace_id
        if failures and len(failures) == len(groups):
            raise failures[-1]  # nothing got through: MLflow is down or unreachable
        return [result if result is not None else RuntimeError("not exported") for result in results]

    def to_mlflow(self, trace: RunTrace) -> list[Any]:
        """The trace's spans as MLflow `Span` entities, with their recorded times."""
        from mlflow.entities import Span
        from mlflow.entities.span_status import SpanStatus, SpanStatusCode
        from mlflow.tracing.constant import SpanAttributeKey, TraceTagKey
        from mlflow.tracing.utils import build_otel_context, dump_span_attribute_value
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import Event, ReadableSpan

        otel_trace_id = int(trace.trace_id.removeprefix("tr-"), 16)
        request_id = dump_span_attribute_value(trace.trace_id)
        empty = Resource.get_empty()
        spans = []
        for span in trace.spans:
            attributes = {
                SpanAttributeKey.REQUEST_ID: request_id,
                SpanAttributeKey.SPAN_TYPE: dump_span_attribute_value(span.span_type),
            }
            if span.inputs is not None:
                attributes[SpanAttributeKey.INPUTS] = dump_span_attribute_value(span.inputs)
            if span.outputs is not None:
                attributes[SpanAttributeKey.OUTPUTS] = dump_span_attribute_value(span.outputs)
            for key, value in span.attributes.items():
                attributes[key] = dump_span_attribute_value(value)
            if span.usage is not None:
                attributes.update({key: dump_span_attribute_value(value) for key, value in _usage(span.usage).items()})
            if span.parent is None:
                # Trace tags travel as root-span attributes; log_spans turns them into tags.
                tags = {TraceTagKey.TRACE_NAME: trace.workflow, "agentflow.run_id": trace.run_id}
                tags.update({key: str(value) for key, value in span.attributes.items() if key in _PARENT_TAGS})
                if "agentflow.linked_prompts" in span.attributes:  # the registry prompts the run used
                    tags[TraceTagKey.LINKED_PROMPTS] = span.attributes["agentflow.linked_prompts"]
                for key, value in tags.items():
                    attributes[_TAG_PREFIX + key] = dump_span_attribute_value(value)
            status = SpanStatus(SpanStatusCode(span.status), span.error or "")
            end = int(span.end * 1e9)
            events = [Event("exception", {"exception.message": span.error}, end)] if span.error else []
            otel = ReadableSpan(
                name=span.name,
                context=build_otel_context(otel_trace_id, span_id_for(trace.run_id, span.key)),
                parent=build_otel_context(otel_trace_id, span_id_for(trace.run_id, span.parent))
                if span.parent
                else None,
                start_time=int(span.start * 1e9),
                end_time=end,
                attributes=attributes,
                status=status.to_otel_status(),
                events=events,
                resource=empty,  # Resource.create() per span is slow (mlflow#15625)
            )
            spans.append(Span(otel))
        return spans

    def read(self, trace_id: str) -> list[SpanRecord]:
        from mlflow.tracing.constant import SpanAttributeKey

        trace = self.client.get_trace(trace_id, display=False)
        records = []
        for span in trace.data.spans:
            attributes = span.attributes
            usage = None
            if SpanAttributeKey.CHAT_USAGE in attributes:
                tokens = attributes[SpanAttributeKey.CHAT_USAGE]
                usage = LLMUsage(
                    model=attributes.get(SpanAttributeKey.MODEL),
                    provider=attributes.get(SpanAttributeKey.MODEL_PROVIDER),
                    input_tokens=tokens.get("input_tokens", 0),
                    output_tokens=tokens.get("output_tokens", 0),
                    cost=attributes.get(SpanAttributeKey.LLM_COST) or {},
                )
            records.append(
                SpanRecord(
                    key=span.span_id,
                    parent=span.parent_id,
                    name=span.name,
                    span_type=span.span_type,
                    start=span.start_time_ns / 1e9,
                    end=(span.end_time_ns or span.start_time_ns) / 1e9,
                    status=span.status.status_code.value,
                    error=span.status.description or None,
                    inputs=span.inputs,
                    outputs=span.outputs,
                    attributes={key: value for key, value in attributes.items() if key.startswith("agentflow.")},
                    usage=usage,
                )
            )
        return records

    def close(self) -> None:
        return None


def _usage(usage: LLMUsage) -> dict[str, Any]:
    from mlflow.tracing.constant import SpanAttributeKey

    values: dict[str, Any] = {
        SpanAttributeKey.CHAT_USAGE: {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
        SpanAttributeKey.MODEL: usage.model,
        SpanAttributeKey.LLM_COST: usage.cost,
    }
    if usage.provider:
        values[SpanAttributeKey.MODEL_PROVIDER] = usage.provider
    return values
