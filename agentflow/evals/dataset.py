"""Evaluation datasets: JSONL cases in MLflow GenAI's shape, read with file:line errors, or made from past runs.

A case is one JSON object per line: `{"inputs": {...}, "expectations": {...}}`. As shorthands,
`"expected": V` and `"expected_output": V` mean `"expectations": {"expected_response": V}`.
Blank lines and lines starting with `//` are skipped. See docs/evaluate.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow.store.base import RunRecord, RunStore

MAX_CASES = 10_000
_KEYS = frozenset({"inputs", "expectations", "expected", "expected_output"})


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Case:
    inputs: dict[str, Any]
    expectations: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    """`cases.jsonl:3`: where the case was read, for error messages."""

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "expectations": self.expectations}


def parse_case(item: Any, where: str) -> Case:
    """One case from its JSON value; DatasetError names `where` and what to write instead."""
    if not isinstance(item, dict):
        raise DatasetError(f'{where}: a case is a JSON object like {{"inputs": {{...}}, "expectations": {{...}}}}')
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise DatasetError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; a case has inputs, expectations "
            "(or expected / expected_output)"
        )
    inputs = item.get("inputs", {})
    if not isinstance(inputs, dict):
        raise DatasetError(f"{where}: `inputs` must be an object of input names and values, got {inputs!r}")
    expectations = item.get("expectations", {})
    if not isinstance(expectations, dict):
        raise DatasetError(f'{where}: `expectations` must be an object, e.g. {{"expected_response": ...}}')
    expectations = dict(expectations)
    for shorthand in ("expected", "expected_output"):
        if shorthand in item:
            if "expected_response" in expectations:
                raise DatasetError(f"{where}: give `{shorthand}` or `expectations.expected_response`, not both")
            expectations["expected_response"] = item[shorthand]
    return Case(inputs, expectations, where)


def parse_jsonl(text: str, name: str) -> list[Case]:
    """Cases from JSONL text (`name` is what errors call the file)."""
    cases = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        where = f"{name}:{number}"
        try:
            item = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{where}:{exc.colno}: not valid JSON ({exc.msg}); each line is one JSON object"
            ) from None
        cases.append(parse_case(item, where))
        if len(cases) > MAX_CASES:
            raise DatasetError(f"{name}: more than {MAX_CASES} cases; split the dataset")
    if not cases:
        raise DatasetError(f'{name}: no cases; write one JSON object per line, e.g. {{"inputs": {{"q": "hi"}}}}')
    return cases


def load_cases(path: str | Path) -> list[Case]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse_jsonl(text, str(path))


def output_of(outputs: dict[str, Any] | None) -> Any:
    """What a workflow run answered: its only output's value, or the outputs object when it has several."""
    if outputs is not None and len(outputs) == 1:
        return next(iter(outputs.values()))
    return outputs


def cases_from_runs(runs: Iterable[RunRecord]) -> list[Case]:
    """Cases with these runs' inputs, and their outputs as the expected responses."""
    return [
        Case(dict(run.inputs), {"expected_response": output_of(run.outputs)}, f"run {run.id}")
        for run in runs
        if run.outputs is not None
    ]


def pick_runs(
    store: RunStore, workflow: str, *, run_ids: list[str] | None = None, last: int | None = None, status: str = ""
) -> list[RunRecord]:
    """The runs a dataset is made of: those named (each of `workflow`), or its `last` N (with `status`)."""
    if run_ids:
        found = []
        for run_id in run_ids:
            run = store.get_run(run_id)
            matches = [run] if run is not None else store.find_run(run_id)
            if len(matches) != 1:
                what = "no run" if not matches else "several runs start with"
                raise DatasetError(f"{what} '{run_id}'; list them with: agentflow runs list --workflow {workflow}")
            if matches[0].workflow != workflow:
                raise DatasetError(f"run {run_id} is a run of '{matches[0].workflow}', not of '{workflow}'")
            found.append(matches[0])
        return found
    runs = store.list_runs(limit=last or 20, statuses=(status,) if status else (), workflow=workflow)
    if not runs:
        which = f"{status} runs" if status else "runs"
        raise DatasetError(f"'{workflow}' has no {which} yet; run it first (agentflow run FILE)")
    return list(reversed(runs))  # oldest first, as they happened


def to_jsonl(cases: Iterable[Case]) -> str:
    return "".join(json.dumps(case.to_dict(), ensure_ascii=False, default=str) + "\n" for case in cases)
