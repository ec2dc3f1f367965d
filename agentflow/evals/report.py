"""An evaluation's report: each case with its scores, and the aggregate (means, pass rate, latency, cost).

A score is a number: `yes`/true count 1, `no`/false 0, numbers as they are. A case passes when its
run succeeded and every score is at least 0.5; a scorer that could not score a case (its error is
kept) makes it fail. Latency percentiles are nearest-rank over the cases that ran.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from agentflow.evals.runner import CaseRun

PASS_AT = 0.5
MAX_CELL = 40


@dataclass(frozen=True, slots=True)
class Score:
    value: float | None
    raw: Any = None
    rationale: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "raw": self.raw, "rationale": self.rationale, "error": self.error}


@dataclass(frozen=True, slots=True)
class CaseResult:
    run: CaseRun
    scores: dict[str, Score]

    @property
    def passed(self) -> bool:
        return self.run.ok and all(score.value is not None and score.value >= PASS_AT for score in self.scores.values())

    def to_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "case": run.index + 1,
            "where": run.case.where,
            "inputs": run.case.inputs,
            "expectations": run.case.expectations,
            "output": run.output,
            "status": run.status,
            "error": run.error,
            "run_id": run.run_id,
            "variant": run.variant,
            "latency_ms": run.latency_ms,
            "cost_usd": run.cost_usd,
            "tokens": run.tokens,
            "passed": self.passed,
            "scores": {name: score.to_dict() for name, score in self.scores.items()},
        }


@dataclass(slots=True)
class EvalReport:
    workflow: str
    version: str
    node: str | None
    scorers: list[str]
    cases: list[CaseResult]
    variant: str | None = None
    mlflow_run_id: str | None = None
    experiment_id: str | None = None
    created_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def aggregate(self) -> dict[str, Any]:
        latencies = sorted(result.run.latency_ms for result in self.cases if result.run.status != "queued")
        means = {}
        for name in self.scorers:
            values = [result.scores[name].value for result in self.cases if name in result.scores]
            numbers = [value for value in values if value is not None]
            means[name] = round(sum(numbers) / len(numbers), 4) if numbers else None
        count = len(self.cases)
        return {
            "cases": count,
            "succeeded": sum(result.run.ok for result in self.cases),
            "failed": sum(not result.run.ok for result in self.cases),
            "passed": sum(result.passed for result in self.cases),
            "pass_rate": round(sum(result.passed for result in self.cases) / count, 4) if count else None,
            "mean_scores": means,
            "latency_ms_p50": percentile(latencies, 50),
            "latency_ms_p95": percentile(latencies, 95),
            "latency_ms_mean": round(sum(latencies) / len(latencies), 3) if latencies else None,
            "cost_usd_total": round(sum(result.run.cost_usd for result in self.cases), 8),
            "tokens_total": sum(result.run.tokens for result in self.cases),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "version": self.version,
            "node": self.node,
            "variant": self.variant,
            "scorers": self.scorers,
            "mlflow_run_id": self.mlflow_run_id,
            "experiment_id": self.experiment_id,
            "created_at": self.created_at,
            "aggregate": self.aggregate,
            "cases": [result.to_dict() for result in self.cases],
            **self.extra,
        }


def percentile(sorted_values: list[float], rank: float) -> float | None:
    if not sorted_values:
        return None
    index = max(0, math.ceil(rank / 100 * len(sorted_values)) - 1)
    return round(sorted_values[index], 3)


def number(value: Any) -> float | None:
    """A judge's or scorer's value as a number (None when it is not one)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("yes", "true", "pass", "passed"):
            return 1.0
        if word in ("no", "false", "fail", "failed"):
            return 0.0
        try:
            return float(word)
        except ValueError:
            return None
    return None


def render(report: EvalReport) -> str:
    """The report for people: one row per case, then the aggregate."""
    what = f"{report.workflow} ({report.version[:12]})" + (f" node {report.node}" if report.node else "")
    lines = [f"evaluation of {what}" + (f", variant {report.variant}" if report.variant else "")]
    header = ["case", "status", *report.scorers, "latency ms", "cost $", "run", "output"]
    rows = [header]
    for result in report.cases:
        run = result.run
        rows.append(
            [
                str(run.index + 1) + ("" if result.passed else " ✗"),
                run.status,
                *(_score(result.scores.get(name)) for name in report.scorers),
                f"{run.latency_ms:.0f}",
                f"{run.cost_usd:.6f}",
                run.run_id[:12],
                _cell(run.output if run.ok else run.error),
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines.extend(
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )
    summary = report.aggregate
    means = ", ".join(f"{name} {_mean(value)}" for name, value in summary["mean_scores"].items())
    lines.append(
        f"passed {summary['passed']}/{summary['cases']} ({_rate(summary['pass_rate'])})"
        f"; mean: {means}; latency p50 {_ms(summary['latency_ms_p50'])} p95 {_ms(summary['latency_ms_p95'])}"
        f"; cost ${summary['cost_usd_total']:.6f}"
    )
    if report.mlflow_run_id:
        lines.append(f"logged to MLflow: experiment {report.experiment_id}, run {report.mlflow_run_id}")
    return "\n".join(lines)


def _score(score: Score | None) -> str:
    if score is None:
        return "-"
    if score.error:
        return "error"
    return "-" if score.value is None else f"{score.value:g}"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
