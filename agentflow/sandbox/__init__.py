"""Isolation for code written by a model or a user: one `Sandbox` Protocol, three backends, a fail-closed choice."""

from __future__ import annotations

from agentflow.sandbox.base import (
    DEFAULT_MAXIMA,
    PACKAGES,
    WORKDIR,
    Job,
    Limits,
    Result,
    Sandbox,
    SandboxUnavailable,
    merged_limits,
)
from agentflow.sandbox.select import available_backends, backend, open_sandbox

__all__ = [
    "DEFAULT_MAXIMA",
    "PACKAGES",
    "WORKDIR",
    "Job",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxUnavailable",
    "available_backends",
    "backend",
    "merged_limits",
    "open_sandbox",
]
