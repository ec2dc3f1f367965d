"""Pytest fixtures for the fake LLM; `tests/conftest.py` imports them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agentflow.llm.client import LLMClient
from agentflow.settings import Settings
from tests.fakes.openai_server import FakeLLM

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__all__ = ["fake_llm", "fake_llm_server", "llm_client", "llm_settings"]


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLM]:
    """One fake for the whole session; use `fake_llm` unless startup time matters."""
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLM) -> Iterator[FakeLLM]:
    """The session's fake, with an empty script and no recorded requests."""
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def llm_settings(fake_llm: FakeLLM) -> Settings:
    """Settings that send every `openai/...` model to the fake, without retries."""
    return Settings(api_base=fake_llm.base_url, api_key="test-key", llm_timeout=10.0, llm_retries=0)


@pytest.fixture
def llm_client(llm_settings: Settings) -> LLMClient:
    return LLMClient(llm_settings, retry_backoff=0.0)
