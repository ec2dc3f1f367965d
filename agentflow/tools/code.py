"""`python` and `shell`: run what a model wrote, in the sandbox (a code interpreter for agents).

The program runs with the workflow's workspace at /work (so it can read what `write_file` wrote and leave
files for `read_file`), no network, no secrets and the sandbox's default limits capped by the operator.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentflow.settings import Settings
from agentflow.tools.registry import Tool, ToolContext, ToolError

MAX_LOG_CHARS = 20_000
"""What a model gets back of a program's printed output."""


class PythonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        description=(
            "A Python 3.11 program. print() what you want to see; optionally set `result = ...` to a JSON value. "
            "`inputs` holds the JSON given in `inputs`. Files in the current directory persist for this workflow."
        ),
        max_length=100_000,
    )
    inputs: Any = Field(None, description="JSON data the program reads as `inputs`")


class ShellArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(description="A POSIX sh script; its stdout and stderr come back", max_length=100_000)


async def run_python(args: PythonArgs, context: ToolContext) -> dict[str, Any]:
    from agentflow.sandbox.programs import Program, ProgramError

    program = Program("python", args.code, name="<python tool>")
    sandbox, limits = _sandbox(context)
    job, marker = program.job(args.inputs, limits, workspace=_workspace(context))
    result = await sandbox.run(job)
    try:
        value, log = program.outcome(result, marker)
    except ProgramError as exc:
        raise ToolError(str(exc)) from None
    return {"output": _cut(log), "result": value}


async def run_shell(args: ShellArgs, context: ToolContext) -> dict[str, Any]:
    from agentflow.sandbox.programs import Program, stopped_reason

    sandbox, limits = _sandbox(context)
    job, _marker = Program("shell", args.command, name="<shell tool>").job(None, limits, workspace=_workspace(context))
    result = await sandbox.run(job)
    stopped = stopped_reason(result)
    if stopped:
        raise ToolError(stopped)
    return {
        "exit_code": result.exit_code,
        "stdout": _cut(result.stdout.decode("utf-8", errors="replace")),
        "stderr": _cut(result.stderr.decode("utf-8", errors="replace")),
    }


def _sandbox(context: ToolContext) -> tuple[Any, Any]:
    from agentflow.sandbox import SandboxUnavailable, merged_limits, open_sandbox

    settings = context.settings or Settings.from_env()
    try:
        return open_sandbox(settings), merged_limits({}, settings.sandbox_max)
    except SandboxUnavailable as exc:
        raise ToolError(f"code cannot run here: {exc}") from None


def _workspace(context: ToolContext) -> Any:
    if context.workspace is None:
        return None
    context.workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
    return context.workspace


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LOG_CHARS else text[:MAX_LOG_CHARS] + f"\n[cut: {len(text) - MAX_LOG_CHARS} more]"


PYTHON = Tool(
    name="python",
    description=(
        "Run Python code in an isolated sandbox (no network; stdlib plus the operator's packages) and get back "
        "what it printed and its `result`. Use it to compute, parse or analyse files of the workflow's workspace."
    ),
    args_model=PythonArgs,
    fn=run_python,
    code=True,
)
SHELL = Tool(
    name="shell",
    description="Run a POSIX shell script in an isolated sandbox (no network) over the workflow's workspace.",
    args_model=ShellArgs,
    fn=run_shell,
    code=True,
)


def tools(settings: Settings) -> list[Tool]:
    return [PYTHON, SHELL]
