"""Synthetic run inputs: values valid against a workflow's input schema, seeded and reproducible.

`synthetic_inputs(workflow, cases=N, seed=S)` gives N input sets for `agentflow test`
(docs/test-mode.md). The same seed gives the same cases, and the first cases of a longer series
are those of a shorter one. Case 0 is the plain case: every input with a default takes it, every
optional one is left out. The other cases draw each value from its schema (`generate`).

`generate` reads a JSON-Schema subset, the one `spec.inputs` and `output:` schemas speak plus the
usual bounds: `enum`, `const`, `default`; strings' `minLength`/`maxLength`; numbers' `minimum`,
`maximum`, `exclusiveMinimum`, `exclusiveMaximum`; arrays' `items`, `minItems`, `maxItems`;
objects' `properties` and `required`.
"""

from __future__ import annotations

import math
import random
import string
from typing import Any

from agentflow.spec.models import InputSpec, Workflow

WORDS = (
    "invoice", "refund", "printer", "account", "delayed", "order", "broken", "login", "password", "shipment",
    "urgent", "customer", "billing", "update", "question", "thanks", "again", "please", "help", "error",
    "today", "weekly", "report", "summary", "draft",
)  # fmt: skip
NUMBER_SPAN = 1000.0
"""Unbounded numbers are drawn from [-NUMBER_SPAN, NUMBER_SPAN]; a bound on one side spans that far from it."""
MAX_STRING = 60
MAX_ITEMS = 3


def input_schema(spec: InputSpec) -> dict[str, Any]:
    """One declared input as a JSON Schema."""
    schema: dict[str, Any] = {"type": spec.type}
    if spec.enum is not None:
        schema["enum"] = spec.enum
    if spec.default is not None:
        schema["default"] = spec.default
    return schema


def synthetic_inputs(workflow: Workflow, *, cases: int, seed: int) -> list[dict[str, Any]]:
    """`cases` input sets for `workflow`, the same for the same seed."""
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    rng = random.Random(seed)
    declared = workflow.spec.inputs
    plain: dict[str, Any] = {}
    for name, spec in declared.items():
        if spec.default is not None:
            plain[name] = spec.default
        elif spec.is_required:
            plain[name] = generate(input_schema(spec), rng)
    found = [plain]
    for _ in range(cases - 1):
        inputs: dict[str, Any] = {}
        for name, spec in declared.items():
            if not spec.is_required and rng.random() < 0.3:
                continue  # left out: the run gets its default, or null
            inputs[name] = generate(input_schema(spec), rng)
        found.append(inputs)
    return found


def generate(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value valid against `schema`; a default, when given, comes up about one time in three."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    if "default" in schema and rng.random() < 1 / 3:
        return schema["default"]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = rng.choice(kind)
    maker = _MAKERS.get(kind)
    if maker is None:
        raise ValueError(f"cannot generate a value of type {kind!r}; the types are {', '.join(_MAKERS)}")
    return maker(schema, rng)


def _text(schema: dict[str, Any], rng: random.Random) -> str:
    shortest = int(schema.get("minLength", 1))
    longest = int(schema.get("maxLength", max(shortest, MAX_STRING)))
    if shortest > longest:
        raise ValueError(f"minLength {shortest} is above maxLength {longest}: no string fits")
    length = rng.randint(shortest, min(longest, max(shortest, MAX_STRING)))
    words: list[str] = []
    while len(" ".join(words)) < length:
        words.append(rng.choice(WORDS))
    text = " ".join(words)[:length]
    # Cut at a space, a word must not end with one: pad with a letter instead.
    return text if not text.endswith(" ") else text[:-1] + rng.choice(string.ascii_lowercase)


def _bounds(schema: dict[str, Any]) -> tuple[float, float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is None and high is None:
        return -NUMBER_SPAN, NUMBER_SPAN
    if low is None:
        return float(high or 0) - NUMBER_SPAN, float(high or 0)
    if high is None:
        return float(low), float(low) + NUMBER_SPAN
    if float(low) > float(high):
        raise ValueError(f"the minimum {low} is above the maximum {high}: no number fits")
    return float(low), float(high)


def _integer(schema: dict[str, Any], rng: random.Random) -> int:
    low, high = _bounds(schema)
    first, last = math.ceil(low), math.floor(high)
    if "exclusiveMinimum" in schema and first == low:
        first += 1
    if "exclusiveMaximum" in schema and last == high:
        last -= 1
    if first > last:
        raise ValueError(f"no integer lies between {low} and {high}")
    return rng.randint(first, last)


def _number(schema: dict[str, Any], rng: random.Random) -> float:
    low, high = _bounds(schema)
    for _ in range(100):
        value = round(rng.uniform(low, high), 2)
        if low <= value <= high and not _excluded(schema, value):
            return value
    raise ValueError(f"no number found between {low} and {high} (bounds excluded)")


def _excluded(schema: dict[str, Any], value: float) -> bool:
    return value == schema.get("exclusiveMinimum") or value == schema.get("exclusiveMaximum")


def _boolean(schema: dict[str, Any], rng: random.Random) -> bool:
    return rng.random() < 0.5


def _array(schema: dict[str, Any], rng: random.Random) -> list[Any]:
    shortest = int(schema.get("minItems", 0))
    longest = int(schema.get("maxItems", max(shortest, MAX_ITEMS)))
    if shortest > longest:
        raise ValueError(f"minItems {shortest} is above maxItems {longest}: no list fits")
    items = schema.get("items") or {"type": "string", "maxLength": 20}
    return [generate(items, rng) for _ in range(rng.randint(shortest, min(longest, max(shortest, MAX_ITEMS))))]


def _object(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties") or {}
    if not properties:
        return {rng.choice(WORDS): generate({"type": "string", "maxLength": 20}, rng)}
    required = set(schema.get("required", properties))
    return {name: generate(sub, rng) for name, sub in properties.items() if name in required or rng.random() < 0.5}


_MAKERS: dict[str, Any] = {
    "string": _text,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "array": _array,
    "object": _object,
}
