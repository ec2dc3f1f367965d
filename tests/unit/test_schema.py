"""The published JSON Schema matches the models and accepts what the validator accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from agentflow.spec.loader import load_yaml
from agentflow.spec.schema import SCHEMA_ID, schema_text, workflow_json_schema, write_schema
from tests.unit.test_validate import TRIAGE

PUBLISHED = Path(__file__).resolve().parents[2] / "schemas" / "workflow.schema.json"


def test_published_schema_is_current() -> None:
    assert PUBLISHED.exists(), (
        "schemas/workflow.schema.json is missing: run `agentflow schema > schemas/workflow.schema.json`"
    )
    assert PUBLISHED.read_text(encoding="utf-8") == schema_text(), (
        "schemas/workflow.schema.json is stale: the models changed. "
        "Run `agentflow schema > schemas/workflow.schema.json` and commit the result."
    )


def test_schema_shape() -> None:
    schema = workflow_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"].startswith("AgentFlow workflow")
    assert "apiVersion" in schema["properties"]
    assert set(schema["required"]) >= {"apiVersion", "metadata", "spec"}
    assert schema["additionalProperties"] is False


def test_schema_text_format() -> None:
    text = schema_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_schema_accepts_a_valid_workflow_and_rejects_unknown_keys() -> None:
    validator = jsonschema.Draft202012Validator(workflow_json_schema())
    data = load_yaml(TRIAGE).data
    assert list(validator.iter_errors(data)) == []
    data["spec"]["nodes"]["classify"]["promt"] = "typo"
    assert list(validator.iter_errors(data))


def test_write_schema(tmp_path: Path) -> None:
    target = write_schema(tmp_path / "nested" / "workflow.schema.json")
    assert target.read_text(encoding="utf-8") == schema_text()
