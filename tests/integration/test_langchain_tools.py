"""The operator's tools file and its LangChain tools: imported only from the file, checked, bounded."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel, Field

from agentflow.settings import Settings, SettingsError
from agentflow.spec.errors import SpecErrors
from agentflow.spec.validate import load_workflow
from agentflow.tools.langchain_adapter import MAX_OUTPUT_CHARS
from agentflow.tools.operator import OperatorToolsError, load_tools_file, register_operator_tools
from agentflow.tools.registry import ToolError, ToolRegistry

pytestmark = pytest.mark.store_agnostic

MODULE = "agentflow_test_lc_tools"


@tool
def shout(text: str, times: int = 1) -> str:
    """Shout the text."""
    return (text.upper() + "!") * times


class LookupArgs(BaseModel):
    query: str = Field(description="What to look up")


class Lookup(BaseTool):
    name: str = "lookup"
    description: str = "Look a word up."
    args_schema: type[BaseModel] = LookupArgs
    prefix: str = "entry"

    def _run(self, query: str) -> dict[str, str]:
        if query == "boom":
            raise RuntimeError("the dictionary is closed")
        return {"query": query, "entry": f"{self.prefix}: {query}"}


@tool
def huge() -> str:
    """Return far too much."""
    return "x" * (MAX_OUTPUT_CHARS + 50)


imported: list[str] = []


@pytest.fixture
def tools_module() -> Iterator[types.ModuleType]:
    """A module the tools file can name; importing it is recorded."""
    module = types.ModuleType(MODULE)
    module.shout = shout  # type: ignore[attr-defined]
    module.Lookup = Lookup  # type: ignore[attr-defined]
    module.huge = huge  # type: ignore[attr-defined]
    module.not_a_tool = 42  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    yield module
    sys.modules.pop(MODULE, None)


def settings_with(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "tools.yaml"
    path.write_text(text)
    return Settings(home=tmp_path, tools_config=path)


def registry_from(tmp_path: Path, text: str) -> ToolRegistry:
    registry = ToolRegistry()
    register_operator_tools(registry, settings_with(tmp_path, text))
    return registry


ENABLED = f"""
langchain:
  shout: {MODULE}:shout
  lookup: {{object: "{MODULE}:Lookup", kwargs: {{prefix: meaning}}, network: false}}
  huge: {MODULE}:huge
"""


async def test_a_tool_function_and_a_basetool_subclass_are_called_through_the_adapter(
    tmp_path: Path, tools_module: types.ModuleType
) -> None:
    registry = registry_from(tmp_path, ENABLED)
    assert {"langchain/shout", "langchain/lookup", "langchain/huge"} <= set(registry.names())
    shout_tool = registry.get("langchain/shout")
    assert shout_tool.source == "langchain"
    assert shout_tool.network and shout_tool.capability() == "tool langchain/shout; egress to the hosts it is given"
    assert shout_tool.parameters_schema()["required"] == ["text"]
    assert await shout_tool.call({"text": "hi", "times": 2}) == "HI!HI!"
    lookup = registry.get("langchain/lookup")
    assert not lookup.network
    assert lookup.parameters_schema()["properties"]["query"]["description"] == "What to look up"
    assert await lookup.call({"query": "cat"}) == {"query": "cat", "entry": "meaning: cat"}


async def test_unknown_keys_bad_arguments_and_failures_are_tool_errors(
    tmp_path: Path, tools_module: types.ModuleType
) -> None:
    registry = registry_from(tmp_path, ENABLED)
    with pytest.raises(ToolError, match=r"unknown argument 'loud'; valid arguments are text, times"):
        await registry.get("langchain/shout").call({"text": "hi", "loud": True})
    with pytest.raises(ToolError, match=r"'query' is a required property"):
        await registry.get("langchain/lookup").call({})
    with pytest.raises(ToolError, match=r"langchain/lookup failed: RuntimeError: the dictionary is closed"):
        await registry.get("langchain/lookup").call({"query": "boom"})


async def test_output_is_bounded(tmp_path: Path, tools_module: types.ModuleType) -> None:
    registry = registry_from(tmp_path, ENABLED)
    result = await registry.get("langchain/huge").call({})
    assert len(result) < MAX_OUTPUT_CHARS + 100
    assert result.endswith(f"[cut at {MAX_OUTPUT_CHARS} characters]")


def test_a_name_the_operator_did_not_enable_is_not_available(tmp_path: Path, tools_module: types.ModuleType) -> None:
    registry = registry_from(tmp_path, f"langchain:\n  shout: {MODULE}:shout\n")
    assert "langchain/lookup" not in registry
    workflow = """
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: lc}
spec:
  nodes:
    look: {type: tool, tool: langchain/lookup, args: {query: x}}
"""
    with pytest.raises(SpecErrors, match=r"unknown tool 'langchain/lookup'"):
        load_workflow(workflow, "lc.yaml", known_tools=registry.names())


def test_a_missing_file_means_no_operator_tools(tmp_path: Path) -> None:
    registry = ToolRegistry()
    register_operator_tools(registry, Settings(home=tmp_path))
    assert registry.names() == []
    assert load_tools_file(tmp_path / "absent.yaml") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("langchain:\n  shout: nomodule\n", r"tools.yaml:2:3: langchain.shout: 'nomodule' must be `module:attribute`"),
        ("langchan:\n  x: a:b\n", r"tools.yaml:1:1: langchan: unknown key; did you mean 'langchain'\?"),
        (
            "mcp:\n  files:\n    url: https://x.example/mcp\n    tiemout: 3\n",
            r":4:5: mcp.files.tiemout: unknown key; did you mean 'timeout'\?",
        ),
        ("mcp:\n  files: {url: https://x.example/mcp, command: [a]}\n", r":2:3: mcp.files: give either `url`"),
        ("mcp:\n  git: {command: [python3], network: true}\n", r"stdio servers run in the sandbox without network"),
        ("mcp:\n  bad name: {url: https://x.example/mcp}\n", r"name 'bad name' must be 1-64 letters"),
        ("mcp:\n  f: {url: https://x.example/mcp, headers: {A: '${env:TOKEN}'}}\n", r"only \$\{secret:NAME\}"),
        ("mcp:\n  a: {url: https://x.example/mcp}\n  a: {url: https://y.example/mcp}\n", r":3:3: .*duplicate"),
        ("- a\n- b\n", r"tools.yaml:1:1: the tools file is a mapping"),
        ("mcp:\n  f: !!python/object/apply:os.system [touch /tmp/x]\n", r"tools.yaml:2"),
    ],
)
def test_a_broken_file_is_refused_naming_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(OperatorToolsError, match=expected) as raised:
        register_operator_tools(ToolRegistry(), settings_with(tmp_path, text))
    assert isinstance(raised.value, SettingsError)  # stops the start like any other bad setting
    assert str(tmp_path / "tools.yaml") in str(raised.value)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("agentflow_no_such_module:tool", r"langchain.x: cannot import agentflow_no_such_module .*install the package"),
        (f"{MODULE}:missing", r"has no attribute 'missing'"),
        (f"{MODULE}:not_a_tool", r"is not a LangChain tool"),
    ],
)
def test_an_entry_that_does_not_give_a_tool_is_refused(
    tmp_path: Path, tools_module: types.ModuleType, target: str, expected: str
) -> None:
    with pytest.raises(OperatorToolsError, match=expected):
        registry_from(tmp_path, f"langchain:\n  x: {target}\n")


def test_kwargs_for_an_instance_are_refused(tmp_path: Path, tools_module: types.ModuleType) -> None:
    with pytest.raises(OperatorToolsError, match=r"already a tool instance; remove kwargs"):
        registry_from(tmp_path, f"langchain:\n  x: {{object: '{MODULE}:shout', kwargs: {{a: 1}}}}\n")


def test_loading_a_workflow_imports_nothing(tmp_path: Path) -> None:
    workflow = f"""
apiVersion: agentflow/v1
kind: Workflow
metadata: {{name: lc}}
spec:
  nodes:
    look: {{type: tool, tool: "langchain/{MODULE}", args: {{}}}}
"""
    sys.modules.pop(MODULE, None)
    with pytest.raises(SpecErrors):
        load_workflow(workflow, "lc.yaml", known_tools=[])
    load_workflow(workflow, "lc.yaml")  # without a registry the name is not checked, and still nothing is imported
    assert MODULE not in sys.modules
