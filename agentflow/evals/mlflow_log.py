"""Scoring and logging through MLflow: `mlflow.genai.evaluate` on the runs' outputs, in the workflow's experiment.

The outputs are precomputed (no predict_fn): MLflow makes one evaluation trace per case, scores it and
keeps the assessments on it; each trace is tagged with the case's run id and that run's own trace id
(`agentflow.run_id`, `agentflow.run_trace_id`), which links the two in the MLflow UI's search. The
evaluation is one MLflow run tagged `agentflow.eval`, with our aggregate as metrics (`agentflow/...`)
and the whole report as the artifact `agentflow/eval_report.json`; `past_evaluations` reads them back.
`mlflow.genai.evaluate` uses the process's tracking URI and active run, so evaluations here take turns.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, redirect_stdout
from typing import TYPE_CHECKING, Any

from agentflow.evals.judge import JudgeModel, endpoint
from agentflow.evals.report import EvalReport, Score, number
from agentflow.evals.runner import CaseRun
from agentflow.observability.tracer import TraceSettings, trace_id_for

if TYPE_CHECKING:
    from agentflow.settings import Settings

REPORT_ARTIFACT = "agentflow/eval_report.json"
EVAL_TAG = "agentflow.eval"
TURN = threading.Lock()
"""Held while MLflow's process-wide state (tracking URI, active run, judge endpoint) is ours."""


def import_mlflow(settings: Settings) -> tuple[Any, str]:
    """mlflow, imported offline-first, and the tracking URI of this data directory."""
    from agentflow.observability.mlflow_tracer import import_mlflow as imported

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline-first: MLflow must not phone home
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")  # judges price calls from the bundled catalogue
    return imported(), TraceSettings.from_env(settings.home).tracking_uri


@contextmanager
def tracking(mlflow: Any, uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to `uri`, and put back afterwards (MLflow also writes it into
    MLFLOW_TRACKING_URI, which would otherwise outlive this evaluation). Hold TURN around it."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def experiment_of(settings: Settings, workflow: str) -> str:
    """The workflow's experiment (the one its traces go to), created on first use."""
    from agentflow.observability.mlflow_tracer import MlflowTracer

    import_mlflow(settings)
    return MlflowTracer(TraceSettings.from_env(settings.home)).experiment_id(workflow)


def score_and_log(
    settings: Settings,
    report: EvalReport,
    runs: Sequence[CaseRun],
    scorers: Sequence[Any],
    judge: JudgeModel | None,
) -> None:
    """Score the succeeded runs with `scorers`, fill `report.cases`' scores and log everything to MLflow."""
    mlflow, tracking_uri = import_mlflow(settings)
    experiment_id = experiment_of(settings, report.workflow)
    scored = [run for run in runs if run.ok]
    with TURN, tracking(mlflow, tracking_uri):
        tags = {
            EVAL_TAG: "1",
            "agentflow.workflow": report.workflow,
            "agentflow.version": report.version,
            "agentflow.node": report.node or "",
            "agentflow.variant": report.variant or "",
            "agentflow.scorers": ",".join(report.scorers),
        }
        name = (
            f"eval {report.workflow}"
            + (f".{report.node}" if report.node else "")
            + (f" [{report.variant}]" if report.variant else "")
        )
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as active:
            scores: dict[int, dict[str, Score]] = {}
            if scored and scorers:
                # MLflow prints its summary on stdout, which belongs to `--json` here.
                with endpoint(judge) if judge is not None else nullcontext(), redirect_stdout(sys.stderr):
                    result = mlflow.genai.evaluate(data=[_row(run) for run in scored], scorers=list(scorers))
                scores = _scores(result.result_df, scored, report.scorers)
            from agentflow.evals.report import CaseResult

            report.cases = [CaseResult(run, scores.get(run.index, {})) for run in runs]
            report.mlflow_run_id = active.info.run_id
            report.experiment_id = experiment_id
            mlflow.log_metrics(_metrics(report))
            mlflow.log_dict(report.to_dict(), REPORT_ARTIFACT)


def past_evaluations(settings: Settings, workflow: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The workflow's evaluations logged to MLflow, newest first: when, what, and the aggregate metrics."""
    mlflow, tracking_uri = import_mlflow(settings)
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(workflow)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{EVAL_TAG}` = '1'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [
        {
            "mlflow_run_id": run.info.run_id,
            "started_at": run.info.start_time / 1000,
            "version": run.data.tags.get("agentflow.version", ""),
            "node": run.data.tags.get("agentflow.node") or None,
            "variant": run.data.tags.get("agentflow.variant") or None,
            "scorers": run.data.tags.get("agentflow.scorers", ""),
            "metrics": dict(run.data.metrics),
        }
        for run in runs
    ]


def load_report(settings: Settings, mlflow_run_id: str) -> dict[str, Any]:
    """A past evaluation's whole report (per case), from its artifact."""
    mlflow, tracking_uri = import_mlflow(settings)
    client = mlflow.MlflowClient(tracking_uri)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(mlflow_run_id, REPORT_ARTIFACT, folder)
        with open(path, encoding="utf-8") as file:
            data: dict[str, Any] = json.load(file)
    return data


def _row(run: CaseRun) -> dict[str, Any]:
    return {
        "inputs": run.case.inputs,
        "outputs": run.output,
        "expectations": run.case.expectations,
        "tags": {
            "agentflow.run_id": run.run_id,
            "agentflow.run_trace_id": trace_id_for(run.run_id),
            "agentflow.case": str(run.index),
        },
    }


def _scores(frame: Any, scored: Sequence[CaseRun], names: Sequence[str]) -> dict[int, dict[str, Score]]:
    """Each case's scores from MLflow's result table (found by the case tag, else by row order)."""
    if frame is None:
        return {}
    found: dict[int, dict[str, Score]] = {}
    for position, row in enumerate(frame.to_dict(orient="records")):
        tags = row.get("tags") if isinstance(row.get("tags"), dict) else {}
        case = tags.get("agentflow.case")
        index = int(case) if case is not None and str(case).isdigit() else scored[position].index
        assessments = {item.get("assessment_name"): item for item in row.get("assessments") or []}
        found[index] = {name: _score(row, assessments.get(name), name) for name in names}
    return found


def _score(row: dict[str, Any], assessment: dict[str, Any] | None, name: str) -> Score:
    raw = row.get(f"{name}/value")
    feedback = (assessment or {}).get("feedback") or {}
    error = feedback.get("error")
    message = error.get("error_message") if isinstance(error, dict) else (str(error) if error else None)
    rationale = (assessment or {}).get("rationale")
    if raw is None and assessment is None:
        message = message or "the scorer gave no value"
    value = number(raw) if not message else None
    return Score(value, raw if not isinstance(raw, float) or raw == raw else None, rationale, message)


def _metrics(report: EvalReport) -> dict[str, float]:
    summary = report.aggregate
    metrics = {
        f"agentflow/{key}": float(summary[key])
        for key in (
            "cases",
            "succeeded",
            "passed",
            "pass_rate",
            "latency_ms_p50",
            "latency_ms_p95",
            "cost_usd_total",
            "tokens_total",
        )
        if summary[key] is not None
    }
    for name, mean in summary["mean_scores"].items():
        if mean is not None:
            metrics[f"agentflow/{name}_mean"] = float(mean)
    return metrics
