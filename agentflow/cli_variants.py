"""`agentflow variants WORKFLOW [--node N] [--last 500] [--json]`: how a node's variants compare (docs/variants.md)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from agentflow.variants import METRIC_LABELS

if TYPE_CHECKING:
    from agentflow.variant_runs import NodeVariants
    from agentflow.variants import Interval, VariantStats

COMMANDS = frozenset({"variants"})


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    variants = commands.add_parser(
        "variants", help="compare a workflow's node variants: failures, latency, cost, with significance"
    )
    variants.add_argument("workflow", metavar="WORKFLOW", help="a saved workflow's name")
    variants.add_argument("--node", metavar="NODE", help="only this node (default: every node with variants)")
    variants.add_argument("--last", type=int, default=500, metavar="N", help="read the last N runs (default 500)")
    variants.add_argument("--json", action="store_true", help="print the comparison as JSON")


def print_variants(nodes: list[NodeVariants], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"nodes": [node.to_dict() for node in nodes]}, ensure_ascii=False))
    else:
        print("\n\n".join(render(node) for node in nodes) or "no node of this workflow has `variants:`")
    return 0


def render(node: NodeVariants) -> str:
    """One node's table (a row per variant) and the verdicts, for people."""
    weights = ", ".join(f"{name} {weight:g}" for name, weight in node.weights.items())
    lines = [f"node {node.node_id} — {node.runs} finished runs read; weights: {weights}"]
    if not node.report.variants:
        return "\n".join([*lines, "  no execution recorded a variant yet: run the workflow"])
    header = f"  {'VARIANT':<16} {'N':>5}  {'FAILED (95% CI)':<22} {'LATENCY MEAN (95% CI)':<26} {'P50 (95% CI)':<24}"
    lines.append(header + f" {'COST/RUN':>10}  SCORE")
    for stats in node.report.variants:
        lines.append(_row(stats))
    for comparison in node.report.comparisons:
        metric = METRIC_LABELS[comparison.metric]
        lines.append(f"  {metric}, {comparison.best} vs {comparison.other}: {comparison.verdict}")
    return "\n".join(lines)


def _row(stats: VariantStats) -> str:
    failed = f"{stats.failure_rate * 100:.1f}% {_range(stats.failure_interval, '%', 100)}"
    mean = f"{stats.latency_mean_ms:.0f} ms {_range(stats.latency_mean_interval, ' ms')}"
    median = f"{stats.latency_p50_ms:.0f} ms {_range(stats.latency_p50_interval, ' ms')}"
    score = "-" if stats.score_mean is None else f"{stats.score_mean:.3g} (n={stats.scored})"
    cost = f"${stats.cost_mean_usd:.4f}"
    return f"  {stats.variant:<16} {stats.n:>5}  {failed:<22} {mean:<26} {median:<24} {cost:>10}  {score}"


def _range(interval: Interval | None, unit: str, scale: float = 1.0) -> str:
    if interval is None:
        return "[n<2]"
    digits = 1 if unit == "%" else 0
    return f"[{interval.low * scale:.{digits}f}–{interval.high * scale:.{digits}f}{unit}]"
