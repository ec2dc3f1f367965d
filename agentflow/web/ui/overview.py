"""The Overview tab: what runs now, how runs end, what is spent today, and who waits for a person.

Money and tokens come from the cost ledger (as on the Costs tab); run counts
from the runs. Lists are HTML tables whose links are the app's addresses
(`/?tab=runs&run=<id>`), so a run opens where it can be shared; the tokens
heat-map is a table too, its cells coloured by use.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.observability.costs import start_of_day
from agentflow.runtime import AgentFlow
from agentflow.store.base import ASSISTANT, CostRow
from agentflow.web.ui import queries
from agentflow.web.ui.chat import Updates, engine_of
from agentflow.web.ui.costs import budget_status

if TYPE_CHECKING:
    from agentflow.web.server import AppState

RATE_DAYS = 7  # success and failure rates, and the costliest workflows and nodes, over this many days
HEATMAP_DAYS = 14
LISTED = 20  # runs shown per list; the Runs tab has them all
COSTLIEST = 5
MESSAGE_CHARS = 160
FAILED = ("failed", "budget_exceeded")
STOPPED = ("cancelled", "rejected")
HEAT = (37, 99, 235)  # the colour of the busiest cell; lighter ones fade towards the page


@dataclass
class OverviewTab:
    state: AppState
    headline: gr.HTML
    budgets: gr.Markdown
    waiting: gr.HTML
    active: gr.HTML
    workflows: gr.HTML
    nodes: gr.HTML
    heatmap: gr.HTML

    @property
    def outputs(self) -> list[Component]:
        return [self.headline, self.budgets, self.waiting, self.active, self.workflows, self.nodes, self.heatmap]

    def refresh(self) -> Updates:
        flow = engine_of(self.state).flow
        store = flow.store
        week = queries.since(RATE_DAYS)
        return {
            self.headline: headline(flow),
            self.budgets: budget_status(flow.engine.services.ledger, store),
            self.waiting: waiting(flow),
            self.active: active(flow),
            self.workflows: costliest(store.spend(by="workflow", since=week)[:COSTLIEST], "workflow"),
            self.nodes: costliest(store.spend(by="node", since=week)[:COSTLIEST], "node"),
            self.heatmap: heatmap(queries.tokens_by_workflow_and_day(store, HEATMAP_DAYS)),
        }


# -- the parts, as HTML -----------------------------------------------------------------------


def headline(flow: AgentFlow) -> str:
    """Four cards: active runs, runs waiting for a person, how the week's runs ended, spend today."""
    store = flow.store
    now = store.run_counts(since=0)
    week = store.run_counts(since=queries.since(RATE_DAYS))
    running, queued, waits = now.get("running", 0), now.get("queued", 0), now.get("waiting_approval", 0)
    finished = sum(count for status, count in week.items() if status in TERMINAL_STATUSES)
    failed = sum(week.get(status, 0) for status in FAILED)
    stopped = sum(week.get(status, 0) for status in STOPPED)
    if finished:
        rate = _percent(week.get("succeeded", 0), finished)
        ended = f"{_percent(failed, finished)} failed · {_percent(stopped, finished)} cancelled or rejected"
        ended += f" · {finished:,} finished"
    else:
        rate, ended = "—", f"no run finished in the last {RATE_DAYS} days"
    today = queries.totals(store, start_of_day())
    spent = f"runs {queries.money(today['run'].cost_usd if 'run' in today else 0.0)} · assistant "
    spent += queries.money(today["assistant"].cost_usd if "assistant" in today else 0.0)
    ledger = flow.engine.services.ledger
    if ledger is not None and ledger.global_daily_usd is not None:
        spent += f" · {_percent(today['all'].cost_usd, ledger.global_daily_usd)} of the daily budget"
    cards = [
        _card(
            "Active runs", f"{running + queued:,}", f"{running:,} running · {queued:,} queued", "overview-active-count"
        ),
        _card("Waiting for a person", f"{waits:,}", "approve or reject them in Runs", "overview-waiting-count"),
        _card(f"Succeeded, last {RATE_DAYS} days", rate, ended, "overview-rates"),
        _card("Spent today", queries.money(today["all"].cost_usd), spent, "overview-spend"),
    ]
    return f'<div style="display:flex;flex-wrap:wrap;gap:12px">{"".join(cards)}</div>'


def waiting(flow: AgentFlow) -> str:
    store = flow.store
    runs = store.list_runs(statuses=("waiting_approval",), limit=LISTED + 1)
    if not runs:
        return _section(
            "Waiting for a person",
            _empty("Nobody is waited for. Runs that reach an <code>approval</code> node wait here for a decision."),
        )
    rows = []
    for run in runs[:LISTED]:
        approval = store.pending_approval(run.id)
        message = (approval.message if approval else "")[:MESSAGE_CHARS]
        since = queries.when(approval.requested_at if approval else run.created_at)
        rows.append([_run_link(run.id), _workflow_link(run.workflow), html.escape(since), html.escape(message)])
    more = _more() if len(runs) > LISTED else ""
    return _section("Waiting for a person", _table(["run", "workflow", "waiting since", "asks"], rows) + more)


def active(flow: AgentFlow) -> str:
    runs = flow.store.list_runs(statuses=("running", "queued"), limit=LISTED + 1)
    if not runs:
        return _section("Active runs", _empty("No run is active. Start one from the Chat: the Run button, or /run."))
    rows = [
        [
            _run_link(run.id),
            _workflow_link(run.workflow),
            html.escape(run.status),
            html.escape(queries.when(run.started_at or run.created_at)),
            html.escape(queries.duration(run)),
        ]
        for run in runs[:LISTED]
    ]
    more = _more() if len(runs) > LISTED else ""
    return _section("Active runs", _table(["run", "workflow", "status", "started", "running for"], rows) + more)


def costliest(rows: list[CostRow], by: str) -> str:
    """The costliest workflows or nodes ("workflow.node") of the ledger's rows, with their links."""
    title = f"Costliest {by}s, last {RATE_DAYS} days"
    if not rows:
        return _section(title, _empty(f"No model calls in the last {RATE_DAYS} days. Run a workflow from the Chat."))
    cells = [
        [
            _group_link(row.key),
            f"{row.calls:,}",
            queries.tokens(row.input_tokens + row.output_tokens),
            queries.money(row.cost_usd),
        ]
        for row in rows
    ]
    return _section(title, _table([by, "calls", "tokens", "cost"], cells, numeric=3))


def heatmap(grid: pd.DataFrame) -> str:
    """Tokens per workflow (rows) per day (columns), each cell shaded by its share of the busiest one."""
    title = f"Tokens per workflow per day, last {HEATMAP_DAYS} days"
    if grid.empty:
        return _section(
            title,
            _empty(
                f"No tokens used in the last {HEATMAP_DAYS} days. Run a workflow from the Chat: "
                "each workflow gets a row here, each day a column."
            ),
        )
    busiest = max(int(grid.to_numpy().max()), 1)
    head = "".join(f'<th style="{_CELL};font-weight:normal">{html.escape(day[5:])}</th>' for day in grid.columns)
    body = []
    for name, counts in grid.iterrows():
        cells = "".join(_heat_cell(str(name), str(day), int(count), busiest) for day, count in counts.items())
        body.append(f'<tr><th style="{_CELL};text-align:left">{_group_link(str(name))}</th>{cells}</tr>')
    table = f'<table style="border-collapse:collapse"><tr><th></th>{head}</tr>{"".join(body)}</table>'
    return _section(title, f'<div style="overflow-x:auto">{table}</div>')


# -- HTML helpers: every value from the store is escaped ----------------------------------------

_CELL = "padding:4px 8px;border-bottom:1px solid rgba(128,128,128,.25)"


def _section(title: str, body: str) -> str:
    return f'<div><h3 style="margin:4px 0 8px">{html.escape(title)}</h3>{body}</div>'


def _empty(text: str) -> str:
    return f'<p class="overview-empty" style="opacity:.8">{text}</p>'


def _more() -> str:
    return f'<p>More than {LISTED}: <a href="/?tab=runs">the Runs tab lists them all</a>.</p>'


def _card(label: str, value: str, detail: str, element_id: str) -> str:
    return (
        f'<div id="{element_id}" style="flex:1 1 200px;padding:12px 16px;border:1px solid rgba(128,128,128,.3);'
        f'border-radius:8px"><div style="opacity:.75">{html.escape(label)}</div>'
        f'<div style="font-size:1.8em;font-weight:600">{html.escape(value)}</div>'
        f'<div style="opacity:.75;font-size:.9em">{html.escape(detail)}</div></div>'
    )


def _table(headers: list[str], rows: list[list[str]], *, numeric: int = 0) -> str:
    """A table of cells already in HTML; the last `numeric` columns are right-aligned."""
    first_number = len(headers) - numeric

    def align(index: int) -> str:
        return ";text-align:right" if index >= first_number else ";text-align:left"

    head = "".join(f'<th style="{_CELL}{align(i)}">{html.escape(text)}</th>' for i, text in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}{align(i)}">{cell}</td>' for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f'<table style="border-collapse:collapse;width:100%"><tr>{head}</tr>{body}</table>'


def _heat_cell(workflow: str, day: str, count: int, busiest: int) -> str:
    tip = html.escape(f"{workflow}, {day}: {count:,} tokens", quote=True)
    if not count:
        return f'<td title="{tip}" style="{_CELL}"></td>'
    alpha = 0.12 + 0.88 * count / busiest
    ink = "color:#fff;" if alpha > 0.55 else ""
    red, green, blue = HEAT
    shade = f"background:rgba({red},{green},{blue},{alpha:.2f});{ink}text-align:right"
    return f'<td title="{tip}" style="{_CELL};{shade}">{queries.tokens(count)}</td>'


def _run_link(run_id: str) -> str:
    short = html.escape(run_id[: queries.SHORT_ID])
    return f'<a href="/?tab=runs&amp;run={quote(run_id[: queries.SHORT_ID])}"><code>{short}</code></a>'


def _workflow_link(name: str) -> str:
    return f'<a href="/?tab=workflows&amp;workflow={quote(name)}">{html.escape(name)}</a>'


def _group_link(key: str) -> str:
    """A ledger group (a workflow, "workflow.node", or the assistant's) with a link to where it lives."""
    if key == ASSISTANT:
        return f'<a href="/?tab=chat">{html.escape(ASSISTANT)}</a>'
    workflow, dot, node = key.partition(".")
    if workflow == "?":
        return html.escape(key)
    return _workflow_link(workflow) + (html.escape(f".{node}") if dot else "")


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def build(state: AppState) -> OverviewTab:
    headline_cards = gr.HTML(elem_id="overview-headline")
    budgets = gr.Markdown(elem_id="overview-budgets")
    with gr.Row():
        waiting_runs = gr.HTML(elem_id="overview-waiting")
        active_runs = gr.HTML(elem_id="overview-active")
    with gr.Row():
        workflows = gr.HTML(elem_id="overview-workflows")
        nodes = gr.HTML(elem_id="overview-nodes")
    tokens = gr.HTML(elem_id="overview-heatmap")
    return OverviewTab(state, headline_cards, budgets, waiting_runs, active_runs, workflows, nodes, tokens)
