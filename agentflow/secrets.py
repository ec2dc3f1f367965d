"""Redaction of resolved secret values, wherever they would otherwise be stored or shown."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

MASK = "***"


def redact(value: Any, secrets: Collection[str]) -> Any:
    """`value` with every secret in its nested strings (mapping keys included) replaced by ***."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {redact(str(key), secrets): redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, secrets) for item in value]
    return value
