"""Which LLM providers this machine can use, and which model the assistant picks by default.

Order: AGENTFLOW_MODEL if set; else Ollama reachable on localhost; else the
first provider with an API key (OpenAI, Anthropic, Gemini). No network call
other than one quick local probe of Ollama.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-3-5-haiku-latest",
    "gemini": "gemini/gemini-2.0-flash",
}
KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    available: bool
    detail: str
    model: str | None
    how_to: str


def _ollama_models(base: str, timeout: float) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/api/tags", timeout=timeout) as response:
            data = json.load(response)
    except (OSError, ValueError):
        return None
    return [item.get("name", "") for item in data.get("models", []) if item.get("name")]


def detect(
    environ: Mapping[str, str] | None = None, *, probe_ollama: bool = True, timeout: float = 0.3
) -> list[Provider]:
    env = os.environ if environ is None else environ
    found: list[Provider] = []
    base = env.get("OLLAMA_API_BASE", "http://localhost:11434")
    models = _ollama_models(base, timeout) if probe_ollama else None
    found.append(
        Provider(
            "ollama",
            bool(models),
            f"{len(models)} models at {base}" if models else f"not reachable at {base}",
            f"ollama_chat/{models[0]}" if models else None,  # /api/chat: native tool calls and format
            "Install Ollama, run `ollama serve` and `ollama pull llama3.2`; set OLLAMA_API_BASE if it is not on "
            "localhost:11434. Fully local: no key, no cost.",
        )
    )
    custom = env.get("AGENTFLOW_API_BASE")
    found.append(
        Provider(
            "openai-compatible",
            bool(custom),
            f"AGENTFLOW_API_BASE={custom}" if custom else "AGENTFLOW_API_BASE not set",
            None,
            "For vLLM, LM Studio, llama.cpp or any OpenAI-compatible server: "
            "set AGENTFLOW_API_BASE=http://host:port/v1, "
            "AGENTFLOW_API_KEY if it needs one, and AGENTFLOW_MODEL=openai/<model-name>.",
        )
    )
    for name, variable in KEYS.items():
        present = bool(env.get(variable))
        found.append(
            Provider(
                name,
                present,
                f"{variable} is set" if present else f"{variable} not set",
                DEFAULT_MODELS[name] if present else None,
                f"Set {variable}=… (optionally AGENTFLOW_MODEL={DEFAULT_MODELS[name]} or another {name}/ model).",
            )
        )
    return found


def default_model(environ: Mapping[str, str] | None = None, *, probe_ollama: bool = True) -> str | None:
    """The model new conversations and workflows use when nothing else says."""
    env = os.environ if environ is None else environ
    if env.get("AGENTFLOW_MODEL"):
        return env["AGENTFLOW_MODEL"]
    for provider in detect(env, probe_ollama=probe_ollama):
        if provider.available and provider.model:
            return provider.model
    return None
