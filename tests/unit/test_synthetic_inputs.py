"""Synthetic inputs (agentflow/synthetic.py): every generated value is valid against its schema, reproducibly."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest

from agentflow.engine.inputs import prepare_inputs
from agentflow.spec.models import Workflow
from agentflow.spec.validate import load_workflow
from agentflow.synthetic import generate, input_schema, synthetic_inputs
from tests.integration.helpers import workflow

EVERY_KIND = workflow(
    "kinds",
    """
    inputs:
      ticket: {type: string, description: the customer's message}
      priority: {type: string, enum: [low, normal, high]}
      amount: {type: number}
      count: {type: integer, default: 3}
      urgent: {type: boolean}
      tags: {type: array}
      meta: {type: object, required: false}
      level: {type: integer, enum: [1, 2, 3]}
      note: {type: string, required: false}
      region: {type: string, default: eu}
    nodes:
      echo: {type: transform, expr: "inputs"}
    """,
)
NO_INPUTS = workflow("empty", "nodes:\n  echo: {type: transform, expr: \"'done'\"}")
ONLY_DEFAULTS = workflow(
    "defaults",
    """
    inputs: {topic: {type: string, default: refunds}, limit: {type: number, default: 2.5}}
    nodes:
      echo: {type: transform, expr: "inputs"}
    """,
)

SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "minLength": 5, "maxLength": 8},
    {"type": "string", "minLength": 0, "maxLength": 0},
    {"type": "string", "minLength": 90},
    {"type": "string", "enum": ["a", "b"]},
    {"type": "number", "minimum": 0.5, "maximum": 0.75},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "number", "minimum": 1e6},
    {"type": "number", "maximum": -1e6},
    {"type": "integer", "minimum": -3, "maximum": 3},
    {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 4},
    {"type": "integer", "minimum": 1.2, "maximum": 3.8},
    {"type": "boolean"},
    {"const": {"fixed": True}},
    {"type": ["string", "integer"]},
    {"type": "array", "items": {"type": "integer", "minimum": 10, "maximum": 12}, "minItems": 2, "maxItems": 4},
    {"type": "array", "minItems": 5},
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 4},
            "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
            "nested": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
        },
        "required": ["name", "nested"],
        "additionalProperties": False,
    },
    {"type": "string", "default": "kept"},
]


def load(source: str) -> Workflow:
    return load_workflow(source, "test.yaml")


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: str(schema)[:60])
def test_every_generated_value_is_valid_against_its_schema(schema: dict[str, Any]) -> None:
    rng = random.Random(7)
    values = [generate(schema, rng) for _ in range(200)]

    for value in values:
        jsonschema.validate(value, schema)
    if "const" not in schema and schema.get("maxLength") != 0:
        assert len({repr(value) for value in values}) > 1, "the values vary"


def test_bounds_are_reached_and_never_passed() -> None:
    rng = random.Random(1)
    integers = {generate({"type": "integer", "minimum": -2, "maximum": 2}, rng) for _ in range(300)}
    assert integers == {-2, -1, 0, 1, 2}
    lengths = {len(generate({"type": "string", "minLength": 3, "maxLength": 5}, rng)) for _ in range(300)}
    assert lengths == {3, 4, 5}
    texts = [generate({"type": "string", "maxLength": 30}, rng) for _ in range(50)]
    assert all(text == text.strip() and text for text in texts)


def test_every_case_passes_the_engines_input_check() -> None:
    flow = load(EVERY_KIND)
    schemas = {name: input_schema(spec) for name, spec in flow.spec.inputs.items()}

    for seed in range(20):
        for inputs in synthetic_inputs(flow, cases=10, seed=seed):
            prepared = prepare_inputs(flow, inputs)  # raises InputError on anything invalid
            for name, value in inputs.items():
                jsonschema.validate(value, schemas[name])
            assert set(prepared) == set(flow.spec.inputs)


def test_the_same_seed_gives_the_same_cases_and_longer_series_extend_shorter_ones() -> None:
    flow = load(EVERY_KIND)

    assert synthetic_inputs(flow, cases=6, seed=42) == synthetic_inputs(flow, cases=6, seed=42)
    assert synthetic_inputs(flow, cases=9, seed=42)[:6] == synthetic_inputs(flow, cases=6, seed=42)
    assert synthetic_inputs(flow, cases=6, seed=42) != synthetic_inputs(flow, cases=6, seed=43)


def test_the_first_case_takes_defaults_and_leaves_optional_inputs_out() -> None:
    first = synthetic_inputs(load(EVERY_KIND), cases=1, seed=0)[0]

    assert (first["count"], first["region"]) == (3, "eu")
    assert "meta" not in first and "note" not in first
    assert {"ticket", "priority", "amount", "urgent", "tags", "level"} <= set(first)
    assert synthetic_inputs(load(ONLY_DEFAULTS), cases=1, seed=5) == [{"topic": "refunds", "limit": 2.5}]
    assert synthetic_inputs(load(NO_INPUTS), cases=3, seed=0) == [{}, {}, {}]


def test_later_cases_vary_the_inputs_with_defaults_and_enums() -> None:
    cases = synthetic_inputs(load(EVERY_KIND), cases=40, seed=3)

    assert {case.get("region") for case in cases} - {"eu", None}, "defaults are replaced by generated values too"
    assert {case["priority"] for case in cases} == {"low", "normal", "high"}
    assert {case["level"] for case in cases} == {1, 2, 3}
    assert {True, False} <= {case["urgent"] for case in cases}
    assert any("note" in case for case in cases) and any("note" not in case for case in cases[1:])


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength 5 is above maxLength 2"),
        ({"type": "number", "minimum": 3, "maximum": 1}, "the minimum 3 is above the maximum 1"),
        ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "no integer lies between 1.2 and 1.8"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems 3 is above maxItems 1"),
        ({"type": "null"}, "cannot generate a value of type 'null'"),
    ],
)
def test_schemas_no_value_fits_are_refused_with_the_reason(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(schema, random.Random(0))


def test_a_series_needs_one_case_at_least() -> None:
    with pytest.raises(ValueError, match="cases must be at least 1, got 0"):
        synthetic_inputs(load(EVERY_KIND), cases=0, seed=0)
