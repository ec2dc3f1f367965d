"""Tools come from the `agentflow.tools` entry point group — the built-ins exactly as an outside package's —
and every way of listing them (CLI, API) says what a workflow using each needs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.settings import Settings
from agentflow.tools.registry import builtin_registry

pytestmark = pytest.mark.store_agnostic

CATALOGUE = {
    "http_request", "calculator", "json_query", "current_time", "web_search", "wikipedia", "arxiv", "fetch_page",
    "read_file", "write_file", "list_files", "sql_query", "python", "shell", "send_email", "post_message",
    "read_csv", "read_pdf", "rss",
}  # fmt: skip

PLUGIN = """
from pydantic import BaseModel, ConfigDict, Field
from agentflow.tools.registry import Tool


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str = Field(description="A city")


async def forecast(args, context):
    return {"city": args.city, "sky": "clear"}


def tools(settings):
    return [Tool(name="forecast", description="The weather in a city.", args_model=Args, fn=forecast, pure=True)]


def broken(settings):
    raise RuntimeError("this plugin is broken")
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Path]:
    """An installed distribution `agentflow-weather` with two entry points: one good, one broken."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "agentflow_weather.py").write_text(PLUGIN)
    info = site / "agentflow_weather-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agentflow-weather\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[agentflow.tools]\nweather = agentflow_weather:tools\nbroken = agentflow_weather:broken\n"
    )
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("agentflow_weather", None)


def test_the_catalogue_is_installed_through_entry_points(tmp_path: Path) -> None:
    registry = builtin_registry(Settings(home=tmp_path))
    assert set(registry.names()) >= CATALOGUE
    assert {tool.source for tool in registry if tool.name in CATALOGUE} == {"builtin"}
    for tool in registry:
        schema = tool.parameters_schema()
        assert schema.get("additionalProperties") is False, f"{tool.name} must forbid unknown arguments"
        assert tool.description.strip(), tool.name


async def test_an_outside_package_adds_tools_and_a_broken_one_is_skipped(
    plugin: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentflow.tools.registry"):
        registry = builtin_registry(Settings(home=tmp_path))
    forecast = registry.get("forecast")
    assert forecast.source == "agentflow-weather"
    assert await forecast.call({"city": "Lyon"}) == {"city": "Lyon", "sky": "clear"}
    assert "calculator" in registry, "the built-ins are still there"
    assert "tool plugin 'broken' (agentflow_weather:broken) could not be loaded: RuntimeError" in caplog.text


def test_tools_list_says_what_each_tool_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path))
    assert main(["tools", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) >= CATALOGUE
    assert rows["calculator"]["capability"] == "nothing (computes only)"
    assert rows["python"]["code"] is True and "code execution in the sandbox" in rows["python"]["capability"]
    assert rows["http_request"]["parameters"]["properties"]["url"]["type"] == "string"
    assert rows["web_search"]["hosts"], "a fixed-host tool names its hosts"
    assert main(["tools", "list"]) == 0
    text = capsys.readouterr().out
    assert "calculator" in text and "tool python; code execution in the sandbox" in text


def test_sandbox_status_names_the_backend_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AGENTFLOW_SANDBOX", "bwrap")
    assert main(["sandbox", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["uses"] == "bwrap" and status["problem"] is None
    assert set(status["backends"]) == {"docker", "gvisor", "bwrap"}
    monkeypatch.setenv("AGENTFLOW_SANDBOX", "lxc")
    assert main(["sandbox", "status"]) == 2
    assert "AGENTFLOW_SANDBOX='lxc' must be one of auto, docker, gvisor, bwrap" in capsys.readouterr().err
