"""The Tools tab: every tool workflows can use — where it comes from, its arguments, the capability a person
grants for it — and where code runs (the sandbox backends on this machine). Read-only: tools come from
installed packages and the operator's tools.yaml, never from this page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.web.ui.chat import Updates

if TYPE_CHECKING:
    from agentflow.tools.registry import Tool
    from agentflow.web.server import AppState

TOOL_COLUMNS = ["tool", "source", "needs", "arguments"]


@dataclass
class ToolsTab:
    state: AppState
    sandbox: gr.Markdown
    table: gr.Dataframe
    chosen: gr.Dropdown
    detail: gr.Markdown

    @property
    def outputs(self) -> list[Component]:
        return [self.sandbox, self.table, self.chosen, self.detail]

    def tools(self) -> list[Tool]:
        return list(self.state.flow.engine.services.tools)

    def refresh(self) -> Updates:
        tools = self.tools()
        rows = [[tool.name, tool.source, tool.capability(), ", ".join(_arguments(tool))] for tool in tools]
        names = [tool.name for tool in tools]
        return {
            self.sandbox: sandbox_text(self.state),
            self.table: pd.DataFrame(rows, columns=TOOL_COLUMNS),
            self.chosen: gr.Dropdown(choices=names, value=None),
            self.detail: "Pick a tool to see its description and arguments schema.",
        }

    def show(self, name: str | None) -> Updates:
        tool = next((tool for tool in self.tools() if tool.name == name), None)
        if tool is None:
            return {self.detail: "Pick a tool to see its description and arguments schema."}
        return {self.detail: tool_text(tool)}

    def pick(self, event: gr.SelectData) -> Updates:
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        tools = self.tools()
        if not isinstance(row, int) or not 0 <= row < len(tools):
            return {}
        return {self.chosen: tools[row].name, **self.show(tools[row].name)}


def _arguments(tool: Tool) -> list[str]:
    schema = tool.parameters_schema()
    required = set(schema.get("required", ()))
    return [name if name in required else f"{name}?" for name in schema.get("properties", {})]


def tool_text(tool: Tool) -> str:
    described = tool.describe()
    facts = [f"**Source:** {tool.source}", f"**A workflow using it needs:** {tool.capability()}"]
    if tool.hosts:
        facts.append(f"**Reaches:** {', '.join(tool.hosts)}")
    if tool.secret_arguments:
        facts.append(
            f"**Names a secret in:** `{'`, `'.join(tool.secret_arguments)}` (the secret's name, never its value)"
        )
    schema = json.dumps(described["parameters"], indent=2)
    return "\n\n".join([f"### {tool.name}", tool.description, "  \n".join(facts), f"```json\n{schema}\n```"])


def sandbox_text(state: AppState) -> str:
    from agentflow.sandbox import SandboxUnavailable, available_backends, open_sandbox

    settings = state.settings
    try:
        chosen = open_sandbox(settings).name
        head = f"**Code runs in `{chosen}`** (AGENTFLOW_SANDBOX={settings.sandbox})."
    except SandboxUnavailable as exc:
        head = f"**Code cannot run on this machine:** {exc}"
    lines = [head, "", "| backend | state |", "|---|---|"]
    for name, why_not in available_backends(settings).items():
        lines.append(f"| {name} | {'available' if why_not is None else why_not} |")
    packages = settings.sandbox_packages
    if packages is not None:
        where = "mounted read-only" if packages.is_dir() else "none yet — `agentflow sandbox install numpy pandas`"
        lines += ["", f"Packages every sandbox can import: `{packages}` ({where})."]
    lines += [
        "",
        f"Operator tools (LangChain, MCP servers) come from `{settings.tools_file}`; `agentflow tools list` "
        "prints the same table.",
    ]
    return "\n".join(lines)


def build(state: AppState) -> ToolsTab:
    gr.Markdown(
        "Tools an `agent` or `tool` node can use. Using one that is not *computes only* needs a person's grant "
        "for the workflow (tool, its egress, its secrets, code execution)."
    )
    sandbox = gr.Markdown(elem_id="tools-sandbox")
    table = gr.Dataframe(
        headers=TOOL_COLUMNS, interactive=False, wrap=True, elem_id="tools-table", column_widths=["16%", "10%", "40%"]
    )
    chosen = gr.Dropdown(label="Tool", choices=[], interactive=True, elem_id="tools-choice")
    detail = gr.Markdown(elem_id="tools-detail")
    tab = ToolsTab(state, sandbox, table, chosen, detail)
    private: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
    chosen.change(tab.show, inputs=chosen, outputs=[detail], **private)
    table.select(tab.pick, outputs=[chosen, detail], **private)
    return tab
