"""Shared helpers: medians, the results table and `results.json`."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass
class Row:
    """One line of the table: a measured value, optionally compared with a target."""

    metric: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""


@dataclass
class Report:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(
        self, metric: str, value: float, unit: str, *, target: str = "", ok: bool | None = None, note: str = ""
    ) -> None:
        self.rows.append(Row(metric, value, unit, target, ok, note))

    @property
    def passed(self) -> bool:
        return all(row.ok is not False for row in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "seconds": round(self.seconds, 2),
            "rows": [asdict(row) for row in self.rows],
            "details": self.details,
        }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(reports: Sequence[Report]) -> str:
    header = ("benchmark", "metric", "value", "target", "")
    lines: list[tuple[str, ...]] = []
    for report in reports:
        for index, row in enumerate(report.rows):
            verdict = "" if row.ok is None else ("PASS" if row.ok else "MISS")
            value = f"{_number(row.value)} {row.unit}".rstrip()
            metric = row.metric + (f"  ({row.note})" if row.note else "")
            lines.append((report.name if index == 0 else "", metric, value, row.target, verdict))
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        name, metric, value, target, verdict = line
        return (
            f"{name:<{widths[0]}}  {metric:<{widths[1]}}  {value:>{widths[2]}}  {target:<{widths[3]}}  {verdict}"
        ).rstrip()

    rule = "-" * (sum(widths) + 8)
    out = [fmt(header), rule]
    previous = None
    for line in lines:
        if line[0] and previous is not None:
            out.append(rule)
        out.append(fmt(line))
        previous = line
    return "\n".join(out)


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save(reports: Sequence[Report]) -> Path:
    """Merge these reports into `benchmarks/results.json` (other benchmarks' entries are kept)."""
    data: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            data = json.loads(RESULTS.read_text())
        except ValueError:
            data = {}
    data.setdefault("benchmarks", {})
    data["environment"] = environment()
    for report in reports:
        data["benchmarks"][report.name] = report.to_json()
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    return RESULTS


def main_for(run: Any) -> None:
    """The body of `python -m benchmarks.<name>`."""
    started = time.perf_counter()
    report: Report = run()
    report.seconds = time.perf_counter() - started
    print(format_table([report]))
    print(f"\n({report.seconds:.1f} s; results merged into {save([report]).relative_to(ROOT)})")
