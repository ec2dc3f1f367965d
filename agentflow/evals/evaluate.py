"""One evaluation end to end: check everything, run the cases, score and log them; and the variants side by side.

Every mistake that can be seen before a run (an unknown workflow, node or scorer, a case missing an input
or an expectation, no judge model) is raised as an `EvalError` before anything runs or is spent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentflow.evals import scorers as scoring
from agentflow.evals.dataset import Case, DatasetError
from agentflow.evals.judge import JudgeError, JudgeModel, judge_model
from agentflow.evals.report import EvalReport
from agentflow.evals.runner import DEFAULT_CONCURRENCY, Progress, run_cases, variant_node, variants_of
from agentflow.evals.target import Target, TargetError, resolve, target

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.variants import VariantReport


class EvalError(ValueError):
    """Why an evaluation cannot start; the message says what to change."""


@dataclass(frozen=True, slots=True)
class EvalOptions:
    workflow: str
    cases: Sequence[Case]
    scorers: Sequence[str] = scoring.DEFAULT_SCORERS
    version: str | None = None
    node: str | None = None
    judge: str | None = None
    pattern: str | None = None
    guidelines: Sequence[str] = ()
    concurrency: int = DEFAULT_CONCURRENCY
    by: str = "unknown"
    """The person evaluating: the grant of a node run alone is extended in their name."""


@dataclass(slots=True)
class Prepared:
    target: Target
    scorers: list[str]
    judge: JudgeModel | None
    extra: dict[str, Any] = field(default_factory=dict)


def prepare(flow: AgentFlow, options: EvalOptions) -> Prepared:
    """Everything checked, nothing run: the target, the scorer names and the judge model."""
    try:
        names = scoring.parse_names(options.scorers)
        judge = judge_model(flow.settings, options.judge) if scoring.needs_judge(names) else None
        scoring.check_cases(names, options.cases, pattern=options.pattern, guidelines=options.guidelines)
        stored = resolve(flow, options.workflow, options.version)
        chosen = target(flow, stored, options.node, by=options.by)
        for case in options.cases:
            chosen.run_inputs(case)
    except (scoring.ScorerError, JudgeError, TargetError, DatasetError) as exc:
        raise EvalError(str(exc)) from None
    return Prepared(chosen, names, judge)


async def evaluate(
    flow: AgentFlow, options: EvalOptions, *, variant: str | None = None, on_progress: Progress | None = None
) -> EvalReport:
    """Run, score and log one evaluation (with `variant` forced on the compared node, when given)."""
    prepared = prepare(flow, options)
    return await evaluate_target(flow, options, prepared, variant=variant, on_progress=on_progress)


async def evaluate_target(
    flow: AgentFlow,
    options: EvalOptions,
    prepared: Prepared,
    *,
    variant: str | None = None,
    on_progress: Progress | None = None,
) -> EvalReport:
    """Run, score and log the cases of `options` on an already prepared target."""
    from agentflow.evals.mlflow_log import score_and_log

    chosen = prepared.target
    try:
        runs = await run_cases(
            chosen, options.cases, concurrency=options.concurrency, variant=variant, on_progress=on_progress
        )
    except TargetError as exc:
        raise EvalError(str(exc)) from None
    report = EvalReport(
        workflow=chosen.source.name,
        version=chosen.source.version,
        node=chosen.node,
        scorers=prepared.scorers,
        cases=[],
        variant=variant,
        created_at=time.time(),
    )
    built = scoring.build(
        prepared.scorers, judge=prepared.judge, pattern=options.pattern, guidelines=options.guidelines
    )
    await asyncio.to_thread(score_and_log, flow.settings, report, runs, built, prepared.judge)
    return report


@dataclass(slots=True)
class VariantsResult:
    node: str
    reports: dict[str, EvalReport]
    comparison: VariantReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "variants": {name: report.to_dict() for name, report in self.reports.items()},
            "comparison": self.comparison.to_dict(),
        }


async def evaluate_variants(
    flow: AgentFlow, options: EvalOptions, *, on_progress: Progress | None = None
) -> VariantsResult:
    """Every variant of the compared node on the same cases, one after another, compared (agentflow/variants.py).

    A case's score for the comparison is the mean of its scores; a failed run has none."""
    from agentflow.variants import VariantSample, compare

    prepared = prepare(flow, options)
    try:
        node = variant_node(prepared.target)
    except TargetError as exc:
        raise EvalError(str(exc)) from None
    names = variants_of(prepared.target).get(node) or []
    if not names:
        raise EvalError(f"node '{node}' declares no variants; add `variants:` to it (docs/variants.md)")
    reports: dict[str, EvalReport] = {}
    samples = []
    for name in names:
        report = await evaluate_target(flow, options, prepared, variant=name, on_progress=on_progress)
        reports[name] = report
        for result in report.cases:
            values = [score.value for score in result.scores.values() if score.value is not None]
            mean = sum(values) / len(values) if values and result.run.ok else None
            samples.append(VariantSample(name, result.run.ok, result.run.latency_ms, result.run.cost_usd, mean))
    return VariantsResult(node, reports, compare(samples))
