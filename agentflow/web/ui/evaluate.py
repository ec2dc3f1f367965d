"""The Evaluate tab: pick a workflow (or one node), give cases, choose scorers and judge, run; see each case,
the aggregate, and the workflow's past evaluations (read back from MLflow).

An evaluation runs as a task of the server's loop, not of the browser's request: leaving the page
does not stop it, and the page follows it (cases done, then the report) while it runs. The work is
agentflow/evals/ (docs/evaluate.md), the same as `agentflow eval`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.evals.scorers import CATALOGUE
from agentflow.web.ui.chat import Updates

if TYPE_CHECKING:
    from agentflow.evals.report import EvalReport
    from agentflow.web.server import AppState

log = logging.getLogger(__name__)
WHOLE = "the whole workflow"
CASE_COLUMNS = ["case", "passed", "status", "output", "expected", "scores", "latency ms", "cost $", "run"]
PAST_COLUMNS = ["when", "version", "node", "variant", "pass rate", "means", "p50 ms", "cost $", "MLflow run"]
MAX_CELL = 120


@dataclass
class Job:
    """One evaluation in progress (or done), followed by the page that started it."""

    total: int
    done: int = 0
    report: EvalReport | None = None
    reports: dict[str, EvalReport] = field(default_factory=dict)
    comparison: str = ""
    error: str | None = None
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.changed.set()


@dataclass
class EvaluateTab:
    state: AppState
    workflow: gr.Dropdown
    node: gr.Dropdown
    data: gr.Code
    upload: gr.File
    last: gr.Number
    scorers: gr.CheckboxGroup
    judge: gr.Textbox
    variants: gr.Checkbox
    status: gr.Markdown
    cases: gr.Dataframe
    summary: gr.Markdown
    past: gr.Dataframe
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Evaluations under way, kept here so that the loop does not lose them."""

    @property
    def outputs(self) -> list[Component]:
        return [self.workflow, self.node, self.judge, self.past]

    def refresh(self) -> Updates:
        names = [stored.name for stored in self.state.flow.store.list_workflows() if "--" not in stored.name]
        first = names[0] if names else None
        judge = self.state.flow.settings.judge_model or ""
        return {
            self.workflow: gr.Dropdown(choices=names, value=first),
            self.judge: gr.Textbox(value=judge),
            **self.pick(first),
        }

    def pick(self, workflow: str | None) -> Updates:
        nodes = [WHOLE]
        if workflow:
            stored = self.state.flow.store.get_workflow(workflow)
            if stored is not None:
                nodes += list(self.state.flow.engine.compiled(stored.name, stored.version).workflow.spec.nodes)
        return {self.node: gr.Dropdown(choices=nodes, value=WHOLE), self.past: past_frame(self.state, workflow)}

    def from_runs(self, workflow: str | None, last: float | None) -> Updates:
        from agentflow.evals.dataset import DatasetError, cases_from_runs, pick_runs, to_jsonl

        if not workflow:
            return {self.status: gr.Markdown("Pick a workflow first.")}
        try:
            runs = pick_runs(self.state.flow.store, workflow, last=int(last or 20), status="succeeded")
        except DatasetError as exc:
            return {self.status: gr.Markdown(f"**Cannot make a dataset:** {exc}")}
        cases = cases_from_runs(runs)
        note = f"{len(cases)} cases from the last {len(runs)} succeeded runs, their outputs as expectations."
        return {self.data: gr.Code(value=to_jsonl(cases)), self.status: gr.Markdown(note)}

    def uploaded(self, path: str | None) -> Updates:
        if not path:
            return {}
        return {self.data: gr.Code(value=Path(path).read_text(encoding="utf-8-sig"))}

    async def run(
        self,
        workflow: str | None,
        node: str | None,
        data: str,
        scorers: list[str],
        judge: str,
        variants: bool,
        request: gr.Request,
    ) -> AsyncIterator[Updates]:
        """Start the evaluation as a task of the server and follow it: progress, then the report."""
        from agentflow.evals.dataset import DatasetError, parse_jsonl
        from agentflow.evals.evaluate import EvalError, EvalOptions, evaluate, evaluate_variants, prepare

        flow = self.state.flow
        try:
            if not workflow:
                raise EvalError("pick a workflow first")
            cases = parse_jsonl(data or "", "dataset")
            options = EvalOptions(
                workflow,
                cases,
                scorers=scorers or ["exact_match"],
                node=None if node in (None, WHOLE) else node,
                judge=judge.strip() or None,
                by=f"web:{getattr(request, 'username', None) or 'anonymous'}",
            )
            prepare(flow, options)  # every mistake is said now, before the task starts
        except (DatasetError, EvalError) as exc:
            yield {self.status: gr.Markdown(f"**Cannot evaluate:** {exc}")}
            return
        job = Job(total=len(cases))

        async def work() -> None:
            try:
                if variants:
                    result = await evaluate_variants(flow, options, on_progress=job.progress)
                    job.reports = result.reports
                    job.comparison = comparison_markdown(result)
                else:
                    job.report = await evaluate(flow, options, on_progress=job.progress)
            except EvalError as exc:
                job.error = str(exc)
            except Exception as exc:  # shown on the page; the server goes on
                job.error = f"{type(exc).__name__}: {exc}"
            finally:
                job.finished = True
                job.changed.set()

        task = asyncio.get_running_loop().create_task(work(), name=f"agentflow-eval-{workflow}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        while not job.finished:
            yield {self.status: gr.Markdown(f"Running… cases {job.done}/{job.total} (scoring follows).")}
            job.changed.clear()
            if not job.finished:
                await job.changed.wait()
        if job.error:
            yield {self.status: gr.Markdown(f"**The evaluation failed:** {job.error}")}
            return
        reports = job.reports or ({"": job.report} if job.report else {})
        yield {
            self.status: gr.Markdown(
                f"Done: {len(cases)} cases" + (f", {len(reports)} variants." if variants else ".")
            ),
            self.cases: case_frame(reports),
            self.summary: gr.Markdown(
                "\n\n".join(summary_markdown(report) for report in reports.values())
                + (f"\n\n{job.comparison}" if job.comparison else "")
            ),
            self.past: past_frame(self.state, workflow),
        }


def build(state: AppState) -> EvaluateTab:
    gr.Markdown(
        "Run a workflow — or one node alone — over a dataset and score it with MLflow scorers and LLM judges. "
        "Each case runs as a normal run (traced, priced); the scores are logged to the workflow's MLflow "
        "experiment. See docs/evaluate.md."
    )
    with gr.Row():
        workflow = gr.Dropdown(label="Workflow", choices=[], interactive=True, elem_id="eval-workflow")
        node = gr.Dropdown(label="Run", choices=[WHOLE], value=WHOLE, interactive=True, elem_id="eval-node")
        refresh = gr.Button("Refresh", size="sm")
    with gr.Row():
        with gr.Column(scale=3):
            data = gr.Code(
                label='Cases (JSONL: {"inputs": {...}, "expected": ...} per line)',
                language=None,
                interactive=True,
                lines=8,
                elem_id="eval-data",
            )
        with gr.Column(scale=1):
            upload = gr.File(label="Upload a .jsonl", file_types=[".jsonl", ".json", ".txt"], type="filepath")
            last = gr.Number(label="Last N runs", value=20, precision=0, minimum=1)
            fill = gr.Button("Use the last N runs", size="sm", elem_id="eval-from-runs")
    with gr.Row():
        scorers = gr.CheckboxGroup(
            label="Scorers", choices=list(CATALOGUE), value=["exact_match"], elem_id="eval-scorers"
        )
    with gr.Row():
        judge = gr.Textbox(label="Judge model (for LLM judges)", placeholder="openai/gpt-4o-mini", scale=2)
        variants = gr.Checkbox(label="Compare the node's variants", value=False)
        start = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
    status = gr.Markdown("", elem_id="eval-status")
    cases = gr.Dataframe(headers=CASE_COLUMNS, label="Cases", interactive=False, wrap=True, elem_id="eval-cases")
    summary = gr.Markdown("", elem_id="eval-summary")
    past = gr.Dataframe(headers=PAST_COLUMNS, label="Past evaluations (MLflow)", interactive=False)
    view = EvaluateTab(
        state, workflow, node, data, upload, last, scorers, judge, variants, status, cases, summary, past
    )
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    refresh.click(view.refresh, outputs=view.outputs, **private)
    workflow.change(view.pick, inputs=workflow, outputs=[node, past], **private)
    fill.click(view.from_runs, inputs=[workflow, last], outputs=[data, status], **private)
    upload.change(view.uploaded, inputs=upload, outputs=data, **private)
    start.click(
        view.run,
        inputs=[workflow, node, data, scorers, judge, variants],
        outputs=[status, cases, summary, past],
        show_progress="hidden",
        **private,
    )
    return view


def case_frame(reports: dict[str, EvalReport]) -> pd.DataFrame:
    rows = []
    for variant, report in reports.items():
        for result in report.cases:
            item = result.to_dict()
            scores = ", ".join(
                f"{name} {'error' if score['error'] else score['value']}" for name, score in item["scores"].items()
            )
            rows.append(
                [
                    f"{item['case']}" + (f" [{variant}]" if variant else ""),
                    "yes" if item["passed"] else "no",
                    item["status"],
                    _cell(item["output"] if item["status"] == "succeeded" else item["error"]),
                    _cell(item["expectations"].get("expected_response")),
                    scores,
                    f"{item['latency_ms']:.0f}",
                    f"{item['cost_usd']:.6f}",
                    item["run_id"][:12],
                ]
            )
    return pd.DataFrame(rows, columns=CASE_COLUMNS)


def summary_markdown(report: EvalReport) -> str:
    summary = report.aggregate
    means = ", ".join(f"{name} **{value:.2f}**" for name, value in summary["mean_scores"].items() if value is not None)
    title = f"**{report.variant}**: " if report.variant else ""
    return (
        f"{title}passed **{summary['passed']}/{summary['cases']}**"
        + (f" ({summary['pass_rate']:.0%})" if summary["pass_rate"] is not None else "")
        + (f" · mean {means}" if means else "")
        + f" · latency p50 {_ms(summary['latency_ms_p50'])} ms, p95 {_ms(summary['latency_ms_p95'])} ms"
        + f" · cost ${summary['cost_usd_total']:.6f}"
        + (f" · MLflow run `{report.mlflow_run_id}`" if report.mlflow_run_id else "")
    )


def comparison_markdown(result: Any) -> str:
    lines = [f"**Variants of {result.node}, side by side**", ""]
    lines.extend(f"- {comparison.metric}: {comparison.verdict}" for comparison in result.comparison.comparisons)
    return "\n".join(lines)


def past_frame(state: AppState, workflow: str | None) -> pd.DataFrame:
    from agentflow.evals.mlflow_log import past_evaluations

    try:
        past = past_evaluations(state.settings, workflow) if workflow else []
    except Exception:  # MLflow unreachable (a remote tracking server down): the rest of the tab still works
        log.warning("cannot read past evaluations of %s from MLflow", workflow, exc_info=True)
        past = []
    rows = []
    for item in past:
        metrics = item["metrics"]
        means = ", ".join(
            f"{key.removeprefix('agentflow/').removesuffix('_mean')} {value:.2f}"
            for key, value in metrics.items()
            if key.startswith("agentflow/") and key.endswith("_mean")
        )
        rate = metrics.get("agentflow/pass_rate")
        rows.append(
            [
                time.strftime("%Y-%m-%d %H:%M", time.localtime(item["started_at"])),
                item["version"][:12],
                item["node"] or "",
                item["variant"] or "",
                "-" if rate is None else f"{rate:.0%}",
                means,
                _ms(metrics.get("agentflow/latency_ms_p50")),
                f"{metrics.get('agentflow/cost_usd_total', 0.0):.6f}",
                item["mlflow_run_id"],
            ]
        )
    return pd.DataFrame(rows, columns=PAST_COLUMNS)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
