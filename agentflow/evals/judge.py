"""The model behind LLM judges and the prompt optimiser, as MLflow names it, and where its calls go.

People name models the LiteLLM way (`openai/gpt-4o-mini`, `ollama/llama3.2`); MLflow's judges take
`provider:/model` and call LiteLLM with `provider/model` (mlflow/genai/judges/adapters/litellm_adapter.py).
The endpoint is never chosen by a dataset, a workflow or a form: an `openai/` judge goes where the
operator pointed the project's own model calls (AGENTFLOW_API_BASE, an internal address the operator
configured), every other provider to its usual place (Ollama: OLLAMA_API_BASE or localhost:11434).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agentflow.settings import Settings

_ENV_LOCK = threading.Lock()


class JudgeError(ValueError):
    """No usable judge model; the message says which setting or option to give."""


@dataclass(frozen=True, slots=True)
class JudgeModel:
    name: str
    """The LiteLLM name, as configured (`openai/local-model`)."""
    uri: str
    """The same model as MLflow takes it (`openai:/local-model`)."""
    api_base: str | None = None
    api_key: str | None = None


def judge_model(settings: Settings, given: str | None, *, what: str = "an LLM judge") -> JudgeModel:
    """`--judge`, else AGENTFLOW_JUDGE_MODEL; JudgeError when neither is set or the name has no provider."""
    name = (given or settings.judge_model or "").strip()
    if not name:
        raise JudgeError(
            f"{what} needs a model: pass --judge MODEL (e.g. --judge openai/gpt-4o-mini or ollama/llama3.2) "
            "or set AGENTFLOW_JUDGE_MODEL"
        )
    if "://" in name:
        raise JudgeError(
            f"'{name}' is a URL; name a model (openai/gpt-4o-mini) and set its endpoint with AGENTFLOW_API_BASE"
        )
    if ":/" in name:  # already MLflow's form
        provider, _, model = name.partition(":/")
    else:
        provider, _, model = name.partition("/")
    if not provider or not model:
        raise JudgeError(f"'{name}' has no provider; prefix it, e.g. openai/{name or 'gpt-4o-mini'} or ollama/{name}")
    api_base = settings.api_base if provider == "openai" else None
    return JudgeModel(f"{provider}/{model}", f"{provider}:/{model}", api_base, settings.api_key or "unused")


@contextmanager
def endpoint(model: JudgeModel) -> Iterator[None]:
    """While judges run: an `openai/` judge reaches AGENTFLOW_API_BASE (MLflow's built-in judges take no base URL,
    so LiteLLM reads it from OPENAI_API_BASE); the variables are restored afterwards."""
    if model.api_base is None:
        yield
        return
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in ("OPENAI_API_BASE", "OPENAI_API_KEY")}
        os.environ["OPENAI_API_BASE"] = model.api_base
        os.environ["OPENAI_API_KEY"] = model.api_key or "unused"
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
