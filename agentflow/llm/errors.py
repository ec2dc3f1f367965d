"""Why a provider call failed, whether to retry it, and what the user should change.

LiteLLM wraps provider errors in its own classes and sometimes mislabels them (a refused
connection or a missing OPENAI_API_KEY both arrive as InternalServerError, HTTP 500), so the
decisions here look at the whole exception chain.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.llm.client import CallRecord


class LLMError(Exception):
    """No model in the chain produced a usable reply; the message says what each one did."""

    def __init__(self, message: str, *, attempts: Sequence[tuple[str, str]] = (), calls: Sequence[CallRecord] = ()):
        super().__init__(message)
        self.attempts = list(attempts)
        self.calls = list(calls)


def hint_for(model: str, provider: str | None, exc: BaseException, api_base: str | None = None) -> str | None:
    """What the user can do about a failed call, if we know."""
    import openai

    local = provider in ("ollama", "ollama_chat")
    via_api_base = bool(api_base) and model.startswith("openai/")
    if _auth_failed(exc):
        if via_api_base:
            return f"check AGENTFLOW_API_KEY for the server at {api_base}"
        key = _missing_key(model) or f"{(provider or 'provider').upper()}_API_KEY"
        extra = " or AGENTFLOW_API_BASE (an OpenAI-compatible server)" if provider == "openai" else ""
        return f"set {key}{extra}"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "raise the node's `timeout` or AGENTFLOW_LLM_TIMEOUT, or use a faster model"
    if _connection_failed(exc):
        if via_api_base:
            return f"is the server at AGENTFLOW_API_BASE={api_base} running?"
        if local:
            return "is Ollama running? start it with `ollama serve` (or set OLLAMA_API_BASE)"
        return "check the network connection"
    if isinstance(exc, openai.NotFoundError):
        if local:
            return f"pull the model with `ollama pull {model.split('/', 1)[1]}`"
        return "check the model name (LiteLLM form, e.g. openai/gpt-4o-mini)"
    if isinstance(exc, openai.RateLimitError):
        return "wait, lower the run concurrency, or add a fallback model"
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _connection_failed(exc: BaseException) -> bool:
    """LiteLLM reports a refused connection as InternalServerError (HTTP 500): look at the cause."""
    import openai

    return any(isinstance(cause, openai.APIConnectionError | ConnectionError) for cause in _chain(exc))


def _missing_credentials(exc: BaseException) -> bool:
    """LiteLLM reports a missing OPENAI_API_KEY as InternalServerError (HTTP 500): look at the cause."""
    import openai

    return any(
        type(cause) is openai.OpenAIError and ("credentials" in str(cause) or "api_key" in str(cause))
        for cause in _chain(exc)
    )


def _auth_failed(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError) or _missing_credentials(exc)


def is_transient(exc: BaseException) -> bool:
    import openai

    if _auth_failed(exc):
        return False
    if isinstance(exc, TimeoutError | openai.APITimeoutError | openai.RateLimitError) or _connection_failed(exc):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?(?:\w+Exception\s*-\s*)?")


def describe_error(exc: BaseException, timeout: float) -> str:
    """`InternalServerError (HTTP 500): boom`, without LiteLLM's repeated prefixes."""
    if isinstance(exc, TimeoutError):
        return f"Timeout: no reply within {timeout:g} s"
    if _connection_failed(exc):
        return f"connection failed: {_chain(exc)[-1]}"
    if _missing_credentials(exc):
        return f"AuthenticationError: {_chain(exc)[-1]}"[:300]
    message = _LITELLM_PREFIX.sub("", str(exc)).strip() or repr(exc)
    status = getattr(exc, "status_code", None)
    label = type(exc).__name__ + (f" (HTTP {status})" if isinstance(status, int) else "")
    return f"{label}: {message[:300]}"


def _missing_key(model: str) -> str | None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm

        missing = litellm.validate_environment(model=model).get("missing_keys") or []
    except Exception:
        return None
    return " / ".join(missing) or None
