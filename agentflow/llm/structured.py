"""Structured output: the `response_format` to request, and parsing a reply against a JSON Schema."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema


class OutputMismatch(ValueError):
    """The reply does not parse as JSON or does not match the schema; fed back to the model."""


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    strict = schema.get("type") == "object" and _strict_compatible(schema)
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": strict}}


def _strict_compatible(schema: Any) -> bool:
    """OpenAI's strict mode wants every object closed and all its properties required."""
    if isinstance(schema, list):
        return all(_strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(properties):
            return False
    return all(_strict_compatible(value) for key, value in schema.items() if key not in ("enum", "const", "default"))


def check_schema(schema: dict[str, Any]) -> str | None:
    """What is wrong with the schema itself, if anything."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    return None


_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)


def parse_json_output(text: str, schema: dict[str, Any]) -> Any:
    """Parse a reply as JSON (tolerating ```json fences and chatter around one object) and validate it."""
    candidates = [text.strip()]
    if fenced := _FENCE.search(text):
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        break
    else:
        raise OutputMismatch("the reply is not valid JSON" if text.strip() else "the reply is empty")
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(data))
    if error is not None:
        path = "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        raise OutputMismatch(f"at {path}: {error.message}")
    return data


def repair_message(mismatch: OutputMismatch) -> dict[str, str]:
    return {
        "role": "user",
        "content": (
            f"Your reply does not match the required JSON schema: {mismatch}. "
            "Reply again with only the corrected JSON object: no explanation, no code fences."
        ),
    }


def with_schema_in_prompt(messages: list[dict[str, Any]], schema: dict[str, Any]) -> list[dict[str, Any]]:
    instruction = f"Reply with only a JSON object that matches this JSON Schema:\n{json.dumps(schema)}"
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{instruction}"}, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]
