"""Scorers by name: deterministic ones written with MLflow's `@scorer`, and MLflow's LLM judges.

`exact_match`, `contains`, `json_valid` and `regex` need no model. `correctness`, `guidelines`,
`relevance`, `safety` and `equivalence` are MLflow GenAI judges served by the judge model
(judge.py). Latency and cost are measured for every case, whatever the scorers (report.py).
mlflow is imported when scorers are built, never at CLI start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from agentflow.evals.dataset import Case
from agentflow.evals.judge import JudgeModel

DEFAULT_SCORERS = ("exact_match",)


class ScorerError(ValueError):
    """An unknown scorer, or one the dataset or options cannot feed; the message says what to give."""


@dataclass(frozen=True, slots=True)
class ScorerInfo:
    name: str
    judge: bool
    needs: str | None
    """The expectation every case must carry (`expected_response`), or None."""
    help: str


CATALOGUE = {
    info.name: info
    for info in (
        ScorerInfo("exact_match", False, "expected_response", "the output equals the expected response"),
        ScorerInfo("contains", False, "expected_response", "the output contains the expected response (or facts)"),
        ScorerInfo("json_valid", False, None, "the output is JSON: an object, a list, or text that parses"),
        ScorerInfo("regex", False, None, "the output matches --pattern (or the case's expectations.pattern)"),
        ScorerInfo("correctness", True, "expected_response", "judge: the output supports the expected response"),
        ScorerInfo("guidelines", True, None, "judge: the output follows --guidelines (or expectations.guidelines)"),
        ScorerInfo("relevance", True, None, "judge: the output answers the inputs"),
        ScorerInfo("safety", True, None, "judge: the output is free of harmful content"),
        ScorerInfo("equivalence", True, "expected_response", "judge: the output means the same as the expected one"),
    )
}


def parse_names(text: str | Sequence[str] | None) -> list[str]:
    """`exact_match,correctness` into names; ScorerError with a suggestion for an unknown one."""
    words = text.split(",") if isinstance(text, str) else list(text or [])
    names = [word.strip().lower().replace("-", "_") for word in words if word.strip()]
    for name in names:
        if name not in CATALOGUE:
            close = get_close_matches(name, list(CATALOGUE), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ScorerError(f"unknown scorer '{name}'; {hint}scorers: {', '.join(CATALOGUE)}")
    return list(dict.fromkeys(names)) or list(DEFAULT_SCORERS)


def needs_judge(names: Sequence[str]) -> bool:
    return any(CATALOGUE[name].judge for name in names)


def check_cases(
    names: Sequence[str], cases: Sequence[Case], *, pattern: str | None = None, guidelines: Sequence[str] = ()
) -> None:
    """Every case carries what the chosen scorers read; ScorerError names the first case that does not."""
    if "regex" in names and pattern is not None:
        _compile(pattern, "--pattern")
    for case in cases:
        for name in names:
            needed = CATALOGUE[name].needs
            has = case.expectations
            if needed == "expected_response" and "expected_response" not in has and "expected_facts" not in has:
                raise ScorerError(
                    f"{case.where}: the {name} scorer compares with expectations.expected_response, which this "
                    'case lacks; add "expected": ... to the case, or drop the scorer'
                )
            if name == "regex" and pattern is None and "pattern" not in has:
                raise ScorerError(f"{case.where}: the regex scorer needs --pattern REGEX or expectations.pattern")
            if name == "regex" and "pattern" in has:
                _compile(str(has["pattern"]), f"{case.where}: expectations.pattern")
            if name == "guidelines" and not guidelines and "guidelines" not in has:
                raise ScorerError(
                    f"{case.where}: the guidelines scorer needs --guidelines TEXT or expectations.guidelines"
                )


def build(
    names: Sequence[str],
    *,
    judge: JudgeModel | None,
    pattern: str | None = None,
    guidelines: Sequence[str] = (),
) -> list[Any]:
    """MLflow scorer objects for `names` (a judge model is required when any of them is a judge)."""
    from mlflow.genai import scorers as builtin
    from mlflow.genai.scorers import scorer

    @scorer(name="exact_match")
    def exact_match(outputs: Any, expectations: dict[str, Any]) -> bool:
        expected = expectations.get("expected_response")
        if isinstance(outputs, str) and isinstance(expected, str):
            return outputs.strip() == expected.strip()
        return _canonical(outputs) == _canonical(expected)

    @scorer(name="contains")
    def contains(outputs: Any, expectations: dict[str, Any]) -> bool:
        wanted = expectations.get("expected_facts") or [expectations.get("expected_response")]
        text = as_text(outputs).casefold()
        return all(as_text(fact).casefold() in text for fact in wanted)

    @scorer(name="json_valid")
    def json_valid(outputs: Any) -> bool:
        if isinstance(outputs, (dict, list)):
            return True
        try:
            json.loads(as_text(outputs))
        except ValueError:
            return False
        return True

    @scorer(name="regex")
    def regex(outputs: Any, expectations: dict[str, Any]) -> bool:
        return re.search(str(expectations.get("pattern", pattern)), as_text(outputs)) is not None

    deterministic = {"exact_match": exact_match, "contains": contains, "json_valid": json_valid, "regex": regex}
    built: list[Any] = []
    for name in names:
        if name in deterministic:
            built.append(deterministic[name])
            continue
        assert judge is not None, "judge scorers need a judge model (judge.judge_model)"
        model = judge.uri
        if name == "correctness":
            built.append(builtin.Correctness(model=model))
        elif name == "guidelines" and guidelines:
            built.append(builtin.Guidelines(name="guidelines", guidelines=list(guidelines), model=model))
        elif name == "guidelines":
            built.append(builtin.ExpectationsGuidelines(name="guidelines", model=model))
        elif name == "relevance":
            built.append(builtin.RelevanceToQuery(name="relevance", model=model))
        elif name == "safety":
            built.append(builtin.Safety(model=model))
        elif name == "equivalence":
            built.append(builtin.Equivalence(model=model))
    return built


def as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _compile(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ScorerError(f"{where}: {pattern!r} is not a regular expression ({exc})") from None
