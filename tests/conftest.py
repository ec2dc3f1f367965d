"""Shared fixtures. Tests are offline: every model call goes to a local fake server."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# Real providers are unreachable from the suite: no key, no base URL, no default model leaks in.
for _name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "AGENTFLOW_MODEL", "AGENTFLOW_API_BASE"):
    os.environ.pop(_name, None)
from tests.network_guard import block_the_network, network_guard  # noqa: E402, F401

block_the_network()  # before agentflow is imported: sockets stay on this machine, and Ollama is a closed port


def _dump_tasks(signum: int, frame: object) -> None:
    """`kill -USR1 <pytest pid>`: write every thread's and asyncio task's stack to /tmp/agentflow-hang-<pid>.txt."""
    import asyncio
    import faulthandler

    with open(f"/tmp/agentflow-hang-{os.getpid()}.txt", "w") as out:
        faulthandler.dump_traceback(out, all_threads=True)
        try:
            tasks = asyncio.all_tasks()
        except RuntimeError:
            return
        for task in tasks:
            task.print_stack(file=out)


import signal  # noqa: E402

signal.signal(signal.SIGUSR1, _dump_tasks)

from collections.abc import AsyncIterator, Iterator  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from agentflow.runtime import AgentFlow  # noqa: E402
from agentflow.settings import Price, Settings  # noqa: E402
from tests import postgres  # noqa: E402
from tests.fakes.fixtures import fake_llm, fake_llm_server, llm_client, llm_settings  # noqa: E402, F401
from tests.fakes.openai_server import FakeLLM  # noqa: E402

TEST_PRICE = Price(input_per_token=1e-6, output_per_token=2e-6)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The Postgres pass repeats what depends on where runs are stored; tests marked `store_agnostic` (a sandbox,
    a tool against its fake service, a client library) ran on the first pass and would only repeat it."""
    if not postgres.ON_POSTGRES:
        return
    agnostic = [item for item in items if item.get_closest_marker("store_agnostic")]
    if agnostic:
        config.hook.pytest_deselected(items=agnostic)
        items[:] = [item for item in items if not item.get_closest_marker("store_agnostic")]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test, dropped after it."""
    with postgres.database() as url:
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A fresh Postgres database with no tables at all (for migration tests)."""
    with postgres.database(migrated=False) as url:
        yield url


@pytest.fixture(autouse=True)
def store_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """With AGENTFLOW_TEST_STORE=postgres, the test's AgentFlow processes keep their data in Postgres:
    one fresh database per test, named by AGENTFLOW_DATABASE_URL for the processes the test starts,
    and given to those it opens in-process with settings of their own."""
    if not postgres.ON_POSTGRES:
        yield
        return
    import agentflow.runtime
    from agentflow.store import open_store

    url = postgres.create_database()
    monkeypatch.setenv("AGENTFLOW_DATABASE_URL", url)
    monkeypatch.setenv("AGENTFLOW_EXECUTOR", "local")

    def on_postgres(settings: Settings) -> Any:
        if settings.database_url is None:
            settings = replace(settings, database_url=url, executor="local")
        return open_store(settings)

    monkeypatch.setattr(agentflow.runtime, "open_store", on_postgres)
    from agentflow.memory import open as memory_open

    open_memory = memory_open.open_memory

    def memory_on_postgres(settings: Settings) -> Any:
        if settings.database_url is None:
            settings = replace(settings, database_url=url, executor="local")
        return open_memory(settings)

    monkeypatch.setattr(memory_open, "open_memory", memory_on_postgres)
    yield
    postgres.drop_database(url)


def pytest_sessionfinish(session: pytest.Session) -> None:
    postgres.drop_all()


def fake_settings(home: Path, fake_llm: FakeLLM, *, open_loopback: bool = True) -> Settings:
    """Settings for a process whose models are the fake.

    `open_loopback`: the operator opens 127.0.0.1 to network tools, so the suite's local
    fakes (and only they) stand in for the internet; without it, nothing internal is open.
    """
    return Settings(
        home=home,
        model="openai/test-model",
        api_base=fake_llm.base_url,
        api_key="test-key",
        llm_timeout=10.0,
        llm_retries=0,
        prices={"openai/test-model": TEST_PRICE},
        egress_allow_internal=("127.0.0.1",) if open_loopback else (),
    )


@pytest.fixture
def flow(home: Path, fake_llm: FakeLLM) -> Iterator[AgentFlow]:
    """An AgentFlow process on a fresh data directory, its models served by the fake."""
    instance = AgentFlow.open(fake_settings(home, fake_llm))
    yield instance
    instance.close()


@pytest.fixture
async def running(flow: AgentFlow) -> AsyncIterator[AgentFlow]:
    """The flow with its executor and live feed started: runs run, and those started in a chat answer there."""
    await flow.executor.start()
    await flow.feed.start()
    yield flow
    await flow.feed.stop()
    await flow.executor.stop()
