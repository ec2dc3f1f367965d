"""`agentflow eval WORKFLOW --data cases.jsonl` and `agentflow eval dataset WORKFLOW`: evaluations from a terminal.

The work is in agentflow/evals/; this module parses, prints and chooses exit codes: 0 when every case
passed, 1 when any failed or scored below passing, 2 for a usage error. See docs/evaluate.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.evals.evaluate import VariantsResult
    from agentflow.runtime import AgentFlow

COMMANDS = frozenset({"eval"})


class EvalUsageError(Exception):
    """A mistake in the eval command's arguments or data (the CLI prints it, exit code 2)."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="run a workflow (or one node) over a JSONL dataset and score it with MLflow scorers",
        description="agentflow eval WORKFLOW --data cases.jsonl [--scorers ...]   or   "
        "agentflow eval dataset WORKFLOW (--runs ID,ID | --last N) -o cases.jsonl",
    )
    evaluate.add_argument("words", nargs="+", metavar="WORKFLOW", help="a stored workflow's name; or: dataset WORKFLOW")
    evaluate.add_argument("--data", metavar="FILE", help="the cases: JSONL, one {inputs, expectations} per line")
    evaluate.add_argument(
        "--scorers",
        default="exact_match",
        help="comma-separated: exact_match, contains, json_valid, regex, correctness, guidelines, relevance, "
        "safety, equivalence (default exact_match)",
    )
    evaluate.add_argument("--judge", metavar="MODEL", help="the LLM judges' model (default $AGENTFLOW_JUDGE_MODEL)")
    evaluate.add_argument("--node", help="evaluate this node alone: each case's inputs are its scope")
    evaluate.add_argument("--version", help="the version to evaluate: v2 or an id prefix (default the current one)")
    evaluate.add_argument("--variants", action="store_true", help="run every variant of the node and compare them")
    evaluate.add_argument("--pattern", metavar="REGEX", help="what the regex scorer looks for")
    evaluate.add_argument(
        "--guidelines", action="append", default=[], metavar="TEXT", help="a guideline for the guidelines judge"
    )
    evaluate.add_argument("--concurrency", type=int, default=4, help="cases run at a time (default 4)")
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object")
    # `eval dataset`
    evaluate.add_argument("--runs", metavar="ID,ID", help="dataset: these runs (ids or prefixes)")
    evaluate.add_argument("--last", type=int, metavar="N", help="dataset: the workflow's last N runs (default 20)")
    evaluate.add_argument("--status", default="", help="dataset: only runs with this status, e.g. succeeded")
    evaluate.add_argument("-o", "--output", metavar="FILE", help="dataset: write the cases here (default stdout)")


async def run(flow: AgentFlow, args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[0] == "dataset":
        if len(words) != 2:
            raise EvalUsageError("usage: agentflow eval dataset WORKFLOW (--runs ID,ID | --last N) [-o cases.jsonl]")
        return _dataset(flow, words[1], args)
    if len(words) != 1:
        raise EvalUsageError(f"give one workflow, not {' '.join(words)}; e.g. agentflow eval triage --data cases.jsonl")
    return await _evaluate(flow, words[0], args)


def _dataset(flow: AgentFlow, workflow: str, args: argparse.Namespace) -> int:
    from agentflow.evals.dataset import DatasetError, cases_from_runs, pick_runs, to_jsonl

    if args.runs and args.last:
        raise EvalUsageError("give --runs or --last, not both")
    run_ids = [word.strip() for word in (args.runs or "").split(",") if word.strip()]
    try:
        runs = pick_runs(flow.store, workflow, run_ids=run_ids, last=args.last, status=args.status)
    except DatasetError as exc:
        raise EvalUsageError(str(exc)) from None
    cases = cases_from_runs(runs)
    if not cases:
        raise EvalUsageError(f"none of these {len(runs)} runs has outputs; pick succeeded runs (--status succeeded)")
    text = to_jsonl(cases)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(cases)} cases to {args.output} (from {len(runs)} runs of {workflow})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def _evaluate(flow: AgentFlow, workflow: str, args: argparse.Namespace) -> int:
    from agentflow.cli_grants import person
    from agentflow.evals.dataset import DatasetError, load_cases
    from agentflow.evals.evaluate import EvalError, EvalOptions, evaluate, evaluate_variants
    from agentflow.evals.report import render

    if not args.data:
        raise EvalUsageError(
            f"give the cases with --data FILE.jsonl; make some with: agentflow eval dataset {workflow}"
        )
    if args.concurrency < 1:
        raise EvalUsageError("--concurrency must be at least 1")
    try:
        cases = load_cases(args.data)
    except DatasetError as exc:
        raise EvalUsageError(str(exc)) from None
    options = EvalOptions(
        workflow=workflow,
        cases=cases,
        scorers=args.scorers,
        version=args.version,
        node=args.node,
        judge=args.judge,
        pattern=args.pattern,
        guidelines=tuple(args.guidelines),
        concurrency=args.concurrency,
        by=person(),
    )
    progress = _Progress(enabled=sys.stderr.isatty())
    await flow.executor.start(drain=False)
    try:
        if args.variants:
            result = await evaluate_variants(flow, options, on_progress=progress)
        else:
            report = await evaluate(flow, options, on_progress=progress)
    except EvalError as exc:
        raise EvalUsageError(str(exc)) from None
    finally:
        await flow.executor.stop()
    if args.variants:
        print(json.dumps(result.to_dict(), default=str) if args.json else render_variants(result))
        return 0 if all(_all_passed(report.to_dict()) for report in result.reports.values()) else 1
    print(json.dumps(report.to_dict(), ensure_ascii=False, default=str) if args.json else render(report))
    return 0 if _all_passed(report.to_dict()) else 1


def render_variants(result: VariantsResult) -> str:
    from agentflow.evals.report import render
    from agentflow.variants import format_metric

    lines = [render(report) for report in result.reports.values()]
    lines.append(f"variants of {result.node} side by side:")
    for stats in result.comparison.variants:
        score = "-" if stats.score_mean is None else f"{stats.score_mean:.2f}"
        lines.append(
            f"  {stats.variant}: n={stats.n}  score {score}"
            f"  failures {format_metric('failure_rate', stats.failure_rate)}"
            f"  latency p50 {format_metric('latency_ms', stats.latency_p50_ms)}"
            f"  cost {format_metric('cost_usd', stats.cost_mean_usd)}"
        )
    lines.extend(f"  {comparison.metric}: {comparison.verdict}" for comparison in result.comparison.comparisons)
    return "\n\n".join(lines[: len(result.reports)]) + "\n\n" + "\n".join(lines[len(result.reports) :])


def _all_passed(report: dict[str, Any]) -> bool:
    aggregate = report["aggregate"]
    return bool(aggregate["cases"]) and aggregate["passed"] == aggregate["cases"]


class _Progress:
    """`cases 3/10` on one terminal line while the runs go."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            end = "\n" if done == total else ""
            print(f"\rcases {done}/{total}", end=end, file=sys.stderr, flush=True)
