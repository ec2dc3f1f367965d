"""Observability: every finished run becomes one trace, written by an observer of the event stream.

The engine never calls a tracing backend. `attach_tracing` subscribes a
`TraceExporter` to a process's event bus; it exports in the background through
a `Tracer`: by default MLflow, run in a child process. mlflow is never imported
by this package at import time.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from agentflow.observability.exporter import TraceExporter
from agentflow.observability.process import ProcessTracer
from agentflow.observability.tracer import (
    InMemoryTracer,
    LLMUsage,
    RunTrace,
    SpanRecord,
    Tracer,
    TraceSettings,
    build_run_trace,
    trace_id_for,
)

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

__all__ = [
    "InMemoryTracer",
    "LLMUsage",
    "ProcessTracer",
    "RunTrace",
    "SpanRecord",
    "TraceExporter",
    "TraceSettings",
    "Tracer",
    "attach_tracing",
    "build_run_trace",
    "trace_id_for",
]


def attach_tracing(
    flow: AgentFlow, settings: TraceSettings | None = None, *, tracer: Tracer | None = None
) -> TraceExporter:
    """Export every run of `flow` that finishes from now on, and the backlog of earlier ones, as traces.

    Call `exporter.close()` before `flow.close()`: it tries the pending runs once more.
    """
    settings = settings or TraceSettings.from_env(flow.settings.home)
    if tracer is None:
        from agentflow.observability.mlflow_tracer import MlflowTracer

        # By default MLflow's CPU-heavy store work runs in a child process, off this process's GIL.
        tracer = MlflowTracer(settings) if settings.in_process else ProcessTracer(partial(MlflowTracer, settings))
    app = flow.settings
    exporter = TraceExporter(
        flow.store,
        tracer,
        settings,
        secrets=(
            app.api_key,
            app.password,
            app.api_token,
            app.telegram_token,
            app.telegram_secret,
            app.twilio_auth_token,
        ),
        prices=app.prices,
        environ=flow.engine.services.secrets,
    )
    exporter.unsubscribe = flow.bus.subscribe(exporter)
    exporter.on_recorded = flow.bus.changed
    return exporter.start()
