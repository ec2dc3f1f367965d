"""`code`: a Python or shell program run in the sandbox, its input as JSON, its result as JSON.

The program never sees a secret, the network or the host's files: it gets its input, a fresh workspace and
the limits the node asked for (capped by the operator). With no sandbox available the node refuses to run.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import ToolCalled
from agentflow.engine.nodes.base import NodeConfigError, Outcome, clipped
from agentflow.spec.expressions import render
from agentflow.spec.models import CodeNode, object_schema

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


async def execute(node: CodeNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    from agentflow.sandbox import SandboxUnavailable, merged_limits, open_sandbox
    from agentflow.sandbox.programs import Program, ProgramError

    ctx.check_code()
    settings = ctx.services.settings
    try:
        limits = merged_limits(node.limits.asked(), settings.sandbox_max)
    except ValueError as exc:
        raise NodeConfigError(f"node '{node_id}': {exc}") from None
    try:
        sandbox = open_sandbox(settings)
    except SandboxUnavailable as exc:
        raise NodeConfigError(f"node '{node_id}' cannot run its code: {exc}") from None
    code = node.code if node.code is not None else _read_file(node, ctx, node_id)
    program = Program(node.language, code, name=f"<node {node_id}>")
    inputs = render(node.input, scope) if node.input is not None else _default_input(node, scope)
    job, marker = program.job(inputs, limits)
    started = time.perf_counter()
    result = None
    value: Any = None
    error: str | None = None
    try:
        result = await sandbox.run(job)
        value, _log = program.outcome(result, marker)
        if node.output:
            _check_output(value, node, node_id)
        return Outcome(value)
    except ProgramError as exc:
        error = str(exc)
        raise RuntimeError(f"node '{node_id}' ({node.language} in {sandbox.name}): {exc}") from None
    finally:
        ctx.emit(
            ToolCalled(
                run_id=ctx.run_id,
                node_id=node_id,
                tool=f"sandbox/{node.language}",
                latency_ms=(time.perf_counter() - started) * 1000,
                error=error,
                arguments={
                    "backend": sandbox.name,
                    "limits": _limits_shown(limits),
                    "sha256": hashlib.sha256(code.encode()).hexdigest(),
                    **({"file": node.file} if node.file else {}),
                    "input": clipped(inputs),
                },
                result=None if result is None else _shown(result, value),
            )
        )


def _default_input(node: CodeNode, scope: dict[str, Any]) -> Any:
    if node.needs:
        return {name: scope.get(name) for name in node.needs}
    return scope.get("inputs")


def _read_file(node: CodeNode, ctx: RunContext, node_id: str) -> str:
    """`file:` relative to the workflow's file when it was saved from one, else to its workspace."""
    assert node.file is not None
    base = Path(ctx.source_path).parent if ctx.source_path and Path(ctx.source_path).is_file() else ctx.workspace
    path = (base / node.file).resolve()
    if not path.is_relative_to(base.resolve()):
        raise NodeConfigError(f"node '{node_id}': file {node.file} leads outside {base}")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NodeConfigError(
            f"node '{node_id}': cannot read its program {path} ({exc.strerror or exc}); "
            "`file:` is relative to the workflow's file, or to its workspace when it has none"
        ) from None


def _check_output(value: Any, node: CodeNode, node_id: str) -> None:
    import jsonschema

    assert node.output is not None
    try:
        jsonschema.validate(value, object_schema(node.output))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the result"
        raise RuntimeError(f"node '{node_id}': {where} does not match `output`: {exc.message}") from None


def _limits_shown(limits: Any) -> dict[str, Any]:
    return {
        "memory": f"{limits.memory_mb} MB",
        "cpu": f"{limits.cpu_s:g} s",
        "wall": f"{limits.wall_s:g} s",
        "pids": limits.pids,
        "output": f"{limits.output_bytes} bytes",
        "disk": f"{limits.disk_mb} MB",
    }


def _shown(result: Any, value: Any) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "killed": result.killed,
        "duration_ms": round(result.duration_ms, 1),
        "result": clipped(value),
        "log": clipped(result.stderr.decode("utf-8", errors="replace")),
    }
