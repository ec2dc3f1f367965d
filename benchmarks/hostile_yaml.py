"""Hostile YAML: how long a refusal takes, against loading a normal example workflow.

Each hostile document (an alias bomb, 5,000 levels of nesting written three ways, thousands of
duplicate keys, a file past the size cap) goes through `load_workflow` as text, as `agentflow
validate` and the API do, and must raise `SpecErrors` with its own message. The baseline is
`examples/ticket-triage.yaml` through the same call. Runs alternate (baseline, then each hostile
document) and medians are compared: the ratio says how many normal workflows one refusal costs.

5,000 levels of `[`: libyaml refuses them at its own limit (1,000 levels); the loader then reads
a short prefix with PyYAML's pure-Python parser to report its own limit (64) at its own position.
10,000 duplicate keys: the loader stops after 50 problems.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks._common import ROOT, Report, main_for, median

RUNS = 15
DEPTH = 5000
DUPLICATES = 10_000
BASELINE = ROOT / "examples" / "ticket-triage.yaml"
# A refusal may cost this many loads of a normal workflow: ~0.5 s here, where the tests once allowed 1 s. The slowest
# (deep flow lists, ~200x) is bounded because the pure-Python scanner looks ahead at most 1,024 characters.
TARGET_RATIO = 500.0
HEADER = "apiVersion: agentflow/v1\nkind: Workflow\nmetadata: {name: hostile}\nspec:\n"


def _alias_bomb() -> str:
    lines = ['    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, current in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"    {current}: &{current} [{', '.join([f'*{previous}'] * 9)}]")
    return HEADER + "  inputs:\n" + "\n".join(lines) + "\n"


def documents() -> dict[str, tuple[str, str]]:
    """name -> (document, the start of the message it must be refused with)."""
    from agentflow.spec.loader import MAX_DEPTH, MAX_FILE_BYTES

    too_deep = f"nesting is deeper than {MAX_DEPTH} levels"
    return {
        "alias bomb (9^9 values)": (_alias_bomb(), "alias expansion exceeds"),
        f"{DEPTH:,} nested flow lists": (HEADER + "  inputs: " + "[" * DEPTH + "]" * DEPTH + "\n", too_deep),
        f"{DEPTH:,} nested flow mappings": (
            HEADER + "  inputs: " + "{a: " * DEPTH + "1" + "}" * DEPTH + "\n",
            too_deep,
        ),
        f"{DEPTH:,} nested block lists": (HEADER + "  inputs:\n    " + "- " * DEPTH + "x\n", too_deep),
        f"{DUPLICATES:,} duplicate keys": (
            HEADER + "  nodes:\n" + "    a: {type: transform, expr: inputs}\n" * DUPLICATES,
            "duplicate key 'a'",
        ),
        "1 byte past the size cap": (
            HEADER + "# " + "x" * (MAX_FILE_BYTES - len(HEADER) - 2) + "\n",
            "the file is larger",
        ),
    }


def _time(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def run(runs: int = RUNS) -> Report:
    from agentflow.spec.errors import SpecErrors
    from agentflow.spec.validate import BUILTIN_TOOL_NAMES, load_workflow

    report = Report("hostile_yaml")
    baseline_text = BASELINE.read_text()
    cases = documents()

    def load_baseline() -> None:
        load_workflow(baseline_text, BASELINE.name, known_tools=BUILTIN_TOOL_NAMES)

    def refuse(name: str) -> None:
        text, expected = cases[name]
        try:
            load_workflow(text, "hostile.yaml", known_tools=BUILTIN_TOOL_NAMES)
        except SpecErrors as error:
            if not error.errors[0].message.startswith(expected):
                raise RuntimeError(f"{name}: refused with {error.errors[0].message!r}, not {expected!r}") from None
            return
        raise RuntimeError(f"{name}: loaded without an error")

    load_baseline()  # warm-up: imports, compiled regular expressions, pydantic validators
    for name in cases:
        refuse(name)
    times: dict[str, list[float]] = {"baseline": [], **{name: [] for name in cases}}
    for _ in range(runs):
        times["baseline"].append(_time(load_baseline))
        for name in cases:
            times[name].append(_time(lambda name=name: refuse(name)))

    baseline_ms = median(times["baseline"]) * 1000
    report.add(f"load {BASELINE.relative_to(ROOT)} (baseline)", baseline_ms, "ms")
    ratios: dict[str, float] = {}
    for name in cases:
        ratio = ratios[name] = median(times[name]) * 1000 / baseline_ms
        report.add(
            f"refuse {name}",
            ratio,
            "x",
            target=f"<= {TARGET_RATIO:.0f}x",
            ok=ratio <= TARGET_RATIO,
            note=f"{median(times[name]) * 1000:.1f} ms",
        )
    report.details = {
        "runs_each": runs,
        "baseline_ms": round(baseline_ms, 3),
        "ms": {name: round(median(values) * 1000, 3) for name, values in times.items()},
        "ratio": {name: round(value, 2) for name, value in ratios.items()},
    }
    return report


if __name__ == "__main__":
    main_for(run)
