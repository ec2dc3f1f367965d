"""`agentflow test WORKFLOW`: synthetic inputs, pinned outputs, and a diff against a saved baseline.

Exit codes for CI: 0 every case matches its baseline (or the baseline was written), 1 some case
differs, 2 bad usage (a bad pin, workflow or baseline file). testmode.py runs and compares;
this module reads the arguments and prints. docs/test-mode.md explains the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.store.base import WorkflowVersion
    from agentflow.testmode import Case, Suite

COMMANDS = frozenset({"test"})
DEFAULT_CASES = 5
BASELINES = Path("tests") / "baselines"
PIN_EXAMPLE = """--pin classify='{"category": "bug"}'"""


class TestUsageError(Exception):
    """A bad argument, pin or file: printed as an error, exit code 2."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    test = commands.add_parser(
        "test",
        help="run a workflow on synthetic inputs (and pinned node outputs) and diff it with a saved baseline",
        description="Exit 0 when every case matches the baseline (or the baseline was just written), "
        "1 when any differs, 2 on bad usage.",
    )
    test.add_argument("workflow", metavar="WORKFLOW", help="a workflow file (saved as a version) or a stored name")
    test.add_argument(
        "--cases", type=int, metavar="N", help=f"how many cases (default: the baseline's, else {DEFAULT_CASES})"
    )
    test.add_argument("--seed", type=int, metavar="S", help="the inputs' random seed (default: the baseline's, else 0)")
    test.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NODE=JSON",
        help="answer NODE with this output instead of running it (repeatable; text that is not JSON is a string)",
    )
    test.add_argument("--pins", metavar="FILE", help="a YAML or JSON file mapping node ids to pinned outputs")
    test.add_argument(
        "--baseline",
        metavar="FILE",
        help=f"the baseline file (default: {BASELINES}/<workflow>.json beside the workflow file, or here)",
    )
    test.add_argument("--update-baseline", action="store_true", help="write the baseline from these runs")
    test.add_argument("--json", action="store_true", help="print one JSON object with every case")


async def run(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.engine.pins import PinError, check_pins
    from agentflow.synthetic import synthetic_inputs
    from agentflow.testmode import BaselineError, read_baseline

    version, baseline_path = _version(flow, args.workflow, args.baseline)
    workflow = flow.engine.compiled(version.name, version.version).workflow
    pins = pins_of(args.pin, args.pins)
    try:
        check_pins(workflow, {"pinned": pins})
        baseline = read_baseline(baseline_path)
    except (PinError, BaselineError) as exc:
        raise TestUsageError(str(exc)) from None
    if args.cases is not None and args.cases < 1:
        raise TestUsageError(f"--cases must be at least 1, got {args.cases}")
    cases = args.cases or (len(baseline["cases"]) if baseline else DEFAULT_CASES) or DEFAULT_CASES
    seed = args.seed if args.seed is not None else int((baseline or {}).get("seed", 0))
    suite = await _run(flow, version, synthetic_inputs(workflow, cases=cases, seed=seed), seed, pins, args.json)
    if baseline is None or args.update_baseline:
        return _write(suite, baseline_path, args.json)
    return _compare(suite, baseline, baseline_path, args.json)


def _version(flow: AgentFlow, target: str, baseline: str | None) -> tuple[WorkflowVersion, Path]:
    """The version to test and its baseline's path: a file is saved (and granted by its author, as `run` does)."""
    from agentflow.cli_grants import person
    from agentflow.spec.errors import SpecErrors
    from agentflow.versions import UnknownVersionError, resolve

    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            version = flow.save_workflow_file(path)
        except SpecErrors as exc:
            raise TestUsageError(str(exc)) from None
        except OSError as exc:
            raise TestUsageError(f"cannot read {target}: {exc.strerror or exc}") from None
        flow.grant_version(version, by=person(), note=f"agentflow test {target}")
        where = path.parent
    else:
        try:
            version = resolve(flow.store, target)
        except UnknownVersionError as exc:
            raise TestUsageError(f"{exc}; or give the workflow's file") from None
        where = Path()
    return version, Path(baseline) if baseline else where / BASELINES / f"{version.name}.json"


def pins_of(pairs: list[str], file: str | None) -> dict[str, Any]:
    """Pins from `--pins FILE`, then each `--pin NODE=JSON` (which wins)."""
    pins: dict[str, Any] = dict(_pins_file(Path(file))) if file else {}
    for pair in pairs:
        node_id, sep, raw = pair.partition("=")
        if not sep or not node_id.strip():
            raise TestUsageError(f"--pin '{pair}' is not NODE=JSON; e.g. {PIN_EXAMPLE}")
        try:
            pins[node_id.strip()] = json.loads(raw)
        except ValueError:
            pins[node_id.strip()] = raw  # plain text: the reply of an llm node without `output`
    return pins


def _pins_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TestUsageError(f"cannot read the pins file {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TestUsageError(f"{path}: not YAML or JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TestUsageError(f"{path}: pins must be a mapping of node id to output, like `classify: {{category: bug}}`")
    return {str(node_id): value for node_id, value in data.items()}


async def _run(
    flow: AgentFlow, version: WorkflowVersion, cases: list[dict[str, Any]], seed: int, pins: Any, quiet: bool
) -> Suite:
    from agentflow.engine.budget import BudgetExceededError
    from agentflow.engine.inputs import InputError
    from agentflow.testmode import run_suite
    from agentflow.trust.grants import NeedsGrantError

    def said(case: Case) -> None:
        print(f"case {case.index}  {case.result['status']}  run {case.run_id[:12]}", file=sys.stderr)

    await flow.executor.start(drain=False)  # heartbeats and cancels from other processes apply
    try:
        return await run_suite(flow, version, cases, seed=seed, pins=pins, on_case=None if quiet else said)
    except (InputError, NeedsGrantError, BudgetExceededError) as exc:
        raise TestUsageError(f"run refused: {exc}") from None
    finally:
        await flow.executor.stop()


def _write(suite: Suite, path: Path, as_json: bool) -> int:
    from agentflow.testmode import write_baseline

    write_baseline(path, suite)
    if as_json:
        print(json.dumps(_report(suite, path, written=True), ensure_ascii=False, default=str))
    else:
        print(f"wrote the baseline {path} ({len(suite.cases)} cases, seed {suite.seed}); commit it: the next")
        print("`agentflow test` compares its runs with it (exit 1 when one differs)")
    return 0


def _compare(suite: Suite, baseline: dict[str, Any], path: Path, as_json: bool) -> int:
    from agentflow.testmode import compare_case

    expected = baseline["cases"]
    for case in suite.cases:
        if case.index < len(expected) and isinstance(expected[case.index], dict):
            case.differences = compare_case(expected[case.index], case)
        else:
            case.differences = [f"not in the baseline (it has {len(expected)} cases); add it with --update-baseline"]
    if as_json:
        print(json.dumps(_report(suite, path, written=False), ensure_ascii=False, default=str))
        return 0 if suite.passed else 1
    for case in suite.cases:
        mark = "✓ matches" if not case.differences else "✗ differs"
        print(f"case {case.index}  {mark}  run {case.run_id[:12]}  inputs {json.dumps(case.inputs, default=str)}")
        for line in case.differences:
            print("    " + line)
    same = sum(1 for case in suite.cases if not case.differences)
    print(f"{same} of {len(suite.cases)} cases match the baseline {path}")
    if not suite.passed:
        print("if the change is intended: agentflow test ... --update-baseline, and commit the file")
    return 0 if suite.passed else 1


def _report(suite: Suite, path: Path, *, written: bool) -> dict[str, Any]:
    return {
        "workflow": suite.workflow,
        "version": suite.version,
        "baseline": str(path),
        "written": written,
        "passed": suite.passed,
        "seed": suite.seed,
        "pinned": suite.pins,
        "cases": [case.to_dict() for case in suite.cases],
    }
