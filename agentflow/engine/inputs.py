"""Check and coerce a run's inputs against `spec.inputs` before anything runs."""

from __future__ import annotations

import json
from difflib import get_close_matches
from typing import Any

from agentflow.spec.models import InputSpec, Workflow


class InputError(ValueError):
    """Bad run inputs; the message lists every problem and how to pass the input."""


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def parse_pairs(pairs: list[str], *, example: str) -> dict[str, str]:
    """`key=value` words into a mapping (values stay text; `prepare_inputs` coerces them)."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"'{pair}' is not KEY=VALUE; e.g. {example}")
        inputs[key.strip()] = value
    return inputs


def _coerce(name: str, raw: Any, spec: InputSpec) -> Any:
    value = raw
    if isinstance(raw, str) and spec.type != "string":
        try:
            value = json.loads(raw)
        except ValueError:
            raise InputError(f"input '{name}' must be {spec.type}; got {raw!r}") from None
    expected = _PYTHON_TYPES[spec.type]
    if isinstance(value, bool) and spec.type in ("number", "integer"):
        raise InputError(f"input '{name}' must be {spec.type}; got {raw!r}")
    if not isinstance(value, expected):
        raise InputError(f"input '{name}' must be {spec.type}; got {raw!r}")
    if spec.enum is not None and value not in spec.enum:
        raise InputError(f"input '{name}' must be one of {', '.join(map(str, spec.enum))}; got {raw!r}")
    return value


def _unpaired_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_unpaired_surrogate(key) or _unpaired_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_unpaired_surrogate(item) for item in value)
    return False


def prepare_inputs(workflow: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    declared = workflow.spec.inputs
    problems: list[str] = []
    prepared: dict[str, Any] = {}
    for name in given:
        if name not in declared:
            close = get_close_matches(name, list(declared), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"declared: {', '.join(declared) or 'none'}"
            problems.append(f"unknown input '{name}'; {hint}")
    for name, spec in declared.items():
        if name in given and _unpaired_surrogate(given[name]):
            problems.append(f"input '{name}' is not valid Unicode text (it holds an unpaired surrogate); send UTF-8")
        elif name in given:
            try:
                prepared[name] = _coerce(name, given[name], spec)
            except InputError as exc:
                problems.append(str(exc))
        elif spec.default is not None:
            prepared[name] = spec.default
        elif spec.is_required:
            problems.append(f"missing input '{name}' ({spec.type}); pass it with -i {name}=VALUE")
        else:
            prepared[name] = None
    if problems:
        raise InputError("; ".join(problems))
    return prepared
