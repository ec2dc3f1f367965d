"""Redaction of resolved secret values, wherever they would otherwise be stored or shown."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

MASK = "***"
MIN_REDACTED_CHARS = 8
"""Shorter values are never redacted: masking `x` would corrupt every word that holds one (`te***t`).
Secrets that short are refused where they are given (`agentflow.trust.secrets`)."""


def redact(value: Any, secrets: Collection[str]) -> Any:
    """`value` with every secret in its nested strings (mapping keys included) replaced by ***."""
    secrets = [secret for secret in secrets if secret and len(secret) >= MIN_REDACTED_CHARS]
    if not secrets:
        return value
    return _redact(value, sorted(secrets, key=len, reverse=True))


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {_redact(str(key), secrets): _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item, secrets) for item in value]
    return value
