"""The Workflows tab's Variants section: per node with `variants:`, a row per variant and the verdicts.

The same comparison as `agentflow variants` and `GET /api/workflows/{name}/variants` (agentflow/variant_runs.py);
nothing is shown for a workflow without variants.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from agentflow.spec.errors import SpecErrors
from agentflow.variant_runs import DEFAULT_LAST, NodeVariants, VariantsError, node_variants
from agentflow.variants import Comparison, Interval, VariantStats, format_metric

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

_METRIC_NAMES = {"failure_rate": "Failure rate", "latency_ms": "Latency", "cost_usd": "Cost", "score": "Score"}


def variants_html(flow: AgentFlow, name: str, *, last: int = DEFAULT_LAST) -> str:
    """The section, or '' when no node of the workflow's current version has variants."""
    try:
        nodes = node_variants(flow.store, name, last=last)
    except (VariantsError, SpecErrors):
        return ""
    if not nodes:
        return ""
    parts = [f"<h4>Variants</h4><p>Over the last {last} runs at most; significance at p &lt; 0.05.</p>"]
    parts.extend(_node(node) for node in nodes)
    return f'<section id="workflow-variants" class="workflow-variants">{"".join(parts)}</section>'


def _node(node: NodeVariants) -> str:
    title = f"<p><b>{escape(node.node_id)}</b> · {node.runs} finished runs read</p>"
    if not node.report.variants:
        return title + "<p>No run has recorded a variant of this node yet.</p>"
    rows = "".join(_row(stats, node.weights.get(stats.variant)) for stats in node.report.variants)
    table = (
        '<table class="workflow-variants-table"><thead><tr><th>variant</th><th>weight</th><th>n</th>'
        "<th>failure rate (95% CI)</th><th>latency mean (95% CI)</th><th>p50 (95% CI)</th><th>cost / run</th>"
        f"<th>score</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    verdicts = "".join(_verdict(comparison) for comparison in node.report.comparisons)
    return title + table + (f'<ul class="workflow-variants-verdicts">{verdicts}</ul>' if verdicts else "")


def _row(stats: VariantStats, weight: float | None) -> str:
    score = "–" if stats.score_mean is None else f"{stats.score_mean:.3g} (n={stats.scored})"
    cells = [
        escape(stats.variant),
        "–" if weight is None else f"{weight:g}",
        str(stats.n),
        f"{format_metric('failure_rate', stats.failure_rate)} {_interval('failure_rate', stats.failure_interval)}",
        f"{format_metric('latency_ms', stats.latency_mean_ms)} {_interval('latency_ms', stats.latency_mean_interval)}",
        f"{format_metric('latency_ms', stats.latency_p50_ms)} {_interval('latency_ms', stats.latency_p50_interval)}",
        format_metric("cost_usd", stats.cost_mean_usd),
        score,
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _interval(metric: str, interval: Interval | None) -> str:
    if interval is None:
        return "<small>[n &lt; 2]</small>"
    return f"<small>[{format_metric(metric, interval.low)} – {format_metric(metric, interval.high)}]</small>"


def _verdict(comparison: Comparison) -> str:
    mark = "✓ " if comparison.significant else ""
    return f"<li>{mark}<b>{_METRIC_NAMES[comparison.metric]}</b>: {escape(comparison.verdict)}</li>"
