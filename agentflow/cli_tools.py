"""`agentflow tools list` and `agentflow sandbox status|build|install`: what workflows can call, and where code runs.

Both read this machine's configuration (installed tool packages, the operator's tools.yaml, the sandbox
backends); neither changes a workflow or reaches the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.settings import Settings
    from agentflow.tools.registry import Tool

COMMANDS = frozenset({"tools", "sandbox"})


class ToolsUsageError(Exception):
    """A tools or sandbox command that cannot be done as asked (the CLI prints it, exit code 2)."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tools = commands.add_parser("tools", help="the tools workflows can use, their arguments and what they need")
    tools_commands = tools.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    listing = tools_commands.add_parser("list", help="every tool: where it comes from and the capability it needs")
    listing.add_argument("--json", action="store_true", help="with each tool's arguments schema")

    sandbox = commands.add_parser("sandbox", help="where code nodes and the python/shell tools run")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="COMMAND")
    status = sandbox_commands.add_parser("status", help="which backends work here and which one code uses")
    status.add_argument("--json", action="store_true")
    sandbox_commands.add_parser("build", help="build the Docker backend's image locally (no registry needed)")
    install = sandbox_commands.add_parser(
        "install", help="add Python packages (wheels from PyPI) to the set every sandbox can import"
    )
    install.add_argument("packages", nargs="+", metavar="PACKAGE", help="e.g. numpy pandas")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "tools":
        return tools_list(settings, as_json=args.json)
    if args.sandbox_command == "status":
        return sandbox_status(settings, as_json=args.json)
    if args.sandbox_command == "build":
        return sandbox_build(settings)
    return sandbox_install(settings, args.packages)


def tool_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every tool as `Tool.describe()` gives it, the operator's MCP servers asked for theirs now; a server that
    does not answer is a row `mcp/<server>/*` with its error."""
    from agentflow.tools.operator import aclose_operator_tools
    from agentflow.tools.registry import builtin_registry

    registry = builtin_registry(settings)

    async def ask() -> tuple[list[Tool], dict[str, str]]:
        try:
            return await registry.listing()
        finally:
            await aclose_operator_tools(registry)

    tools, problems = asyncio.run(ask())
    rows = [tool.describe() for tool in tools]
    for prefix, problem in problems.items():
        rows.append(_unlisted(prefix, problem))
    return sorted(rows, key=lambda row: row["name"])


def _unlisted(prefix: str, problem: str) -> dict[str, Any]:
    server = prefix.strip("/").split("/", 1)[-1]
    return {
        "name": prefix + "*",
        "description": f"the tools of the MCP server '{server}' (not listed: it did not answer)",
        "source": f"mcp:{server}",
        "parameters": {},
        "capability": f"tool {prefix}NAME",
        "error": problem,
    }


def tools_list(settings: Settings, *, as_json: bool) -> int:
    rows = tool_rows(settings)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    source_width = max(len(row["source"]) for row in rows)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['source']:<{source_width}}  {row['capability']}")
        detail = f"error: {row['error']}" if "error" in row else f"({', '.join(_arguments(row['parameters']))})"
        print(f"{'':<{width}}  {'':<{source_width}}  {detail}")
    return 0


def _arguments(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", ()))
    return [name if name in required else f"{name}?" for name in schema.get("properties", {})]


def sandbox_status(settings: Settings, *, as_json: bool) -> int:
    from agentflow.sandbox import SandboxUnavailable, available_backends, open_sandbox

    backends = available_backends(settings)
    try:
        chosen: str | None = open_sandbox(settings).name
        problem = None
    except SandboxUnavailable as exc:
        chosen, problem = None, str(exc)
    if as_json:
        print(json.dumps({"setting": settings.sandbox, "uses": chosen, "problem": problem, "backends": backends}))
        return 0 if chosen else 1
    print(f"AGENTFLOW_SANDBOX={settings.sandbox}: code runs in {chosen}" if chosen else f"code cannot run: {problem}")
    for name, why_not in backends.items():
        print(f"  {name:<7} {'available' if why_not is None else why_not}")
    packages = settings.sandbox_packages
    if packages is not None:
        state = "mounted read-only" if packages.is_dir() else "not there (agentflow sandbox install PACKAGE)"
        print(f"  packages {packages}: {state}")
    return 0 if chosen else 1


def sandbox_build(settings: Settings) -> int:
    from agentflow.sandbox.docker import build_image

    try:
        image = build_image(settings)
    except Exception as exc:
        raise ToolsUsageError(f"could not build the sandbox image: {exc}") from None
    print(f"built {image}; AGENTFLOW_SANDBOX=auto now picks Docker while the daemon answers")
    return 0


def sandbox_install(settings: Settings, packages: list[str]) -> int:
    """`pip install --target` into the packages directory: wheels only (no build step runs code here)."""
    target = settings.sandbox_packages
    if target is None:
        raise ToolsUsageError("set AGENTFLOW_SANDBOX_PACKAGES to the directory the sandbox packages live in")
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--upgrade",
        "--target",
        str(target),
        *packages,
    ]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise ToolsUsageError(f"pip could not install {' '.join(packages)} (exit status {done.returncode})")
    print(f"installed {' '.join(packages)} into {target}; every sandbox imports them from there (read-only)")
    return 0
