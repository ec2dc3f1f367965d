"""The JSON Schema of the workflow language, generated from the models and published in `schemas/`.

Editors use it (`# yaml-language-server: $schema=...`) to complete and check
workflow files; a test fails when the committed file no longer matches the models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agentflow.spec.models import Workflow

SCHEMA_ID = "https://agentflow.dev/schemas/workflow.schema.json"
SCHEMA_PATH = Path("schemas") / "workflow.schema.json"


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an `apiVersion: agentflow/v1` workflow."""
    schema = Workflow.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "AgentFlow workflow (agentflow/v1)"
    # The loader accepts `name: string` as shorthand for `name: {type: string}`; so must editors.
    inputs = schema["$defs"]["Spec"]["properties"]["inputs"]
    inputs["additionalProperties"] = {
        "anyOf": [
            inputs["additionalProperties"],
            {"enum": ["string", "number", "integer", "boolean", "array", "object"]},
        ]
    }
    return schema


def schema_text() -> str:
    """The schema as published: sorted keys, two-space indent, trailing newline (what `agentflow schema` prints)."""
    return json.dumps(workflow_json_schema(), sort_keys=True, indent=2) + "\n"


def write_schema(path: str | os.PathLike[str] = SCHEMA_PATH) -> Path:
    """Write the schema file, creating its directory; return where it was written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_text(), encoding="utf-8")
    return target
