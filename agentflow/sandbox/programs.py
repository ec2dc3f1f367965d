"""Python and shell programs as sandbox jobs: the input goes in as JSON on stdin, the result comes back as JSON.

The input is data, never code: it is not interpolated into the program. A Python program reads it as
`inputs` (or receives it as `main(inputs)`) and gives its result as `result = ...` (or `main`'s return value);
what it prints is its log. A shell program reads the JSON on stdin (and from /work/input.json); its stdout is
the result (parsed as JSON when it is JSON).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.sandbox.base import PACKAGES, WORKDIR, Job, Limits, Result

# Runs inside the sandbox, under `python3 -I`: fd 1 is kept for the result alone; the program's prints, and
# any child's output, go to fd 2 (its log). The marker keeps a program that writes to fd 1 anyway from
# forging a result without also knowing this run's random marker.
HARNESS = r"""
import json, os, sys, traceback
payload = json.loads(sys.stdin.buffer.read())
sys.stdin = open(os.devnull)
result_fd = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr
if os.path.isdir(PACKAGES):
    sys.path.append(PACKAGES)
def emit(record):
    with os.fdopen(result_fd, "w") as out:
        out.write(payload["marker"] + json.dumps(record) + "\n")
namespace = {"__name__": "__main__", "inputs": payload["inputs"]}
try:
    exec(compile(payload["code"], payload["name"], "exec"), namespace)
    value = namespace["main"](payload["inputs"]) if callable(namespace.get("main")) else namespace.get("result")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        emit({"error": "the result is not JSON: %s (return dicts, lists, strings, numbers, booleans or None)" % exc})
        sys.exit(1)
    emit({"result": value})
except SystemExit as exc:
    if exc.code not in (None, 0):
        emit({"error": "the program exited with status %s" % exc.code})
        raise
    emit({"result": namespace.get("result")})
except BaseException:
    kind, error, trace = sys.exc_info()
    frames = [frame for frame in traceback.extract_tb(trace) if frame.filename == payload["name"]]
    lines = traceback.format_list(frames) + traceback.format_exception_only(kind, error)
    emit({"error": "".join(lines).strip()})
    sys.exit(1)
""".replace("PACKAGES", repr(PACKAGES))

LOG_TAIL = 2000
"""How much of a failing program's log its error quotes."""


class ProgramError(RuntimeError):
    """The program failed, or the sandbox stopped it; the message says which and quotes the log's end."""

    def __init__(self, message: str, result: Result | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class Program:
    language: str
    """python or shell."""
    code: str
    name: str = "<code>"
    """What tracebacks call the program (the node id, or the tool)."""

    def job(self, inputs: Any, limits: Limits, *, workspace: Path | None = None) -> tuple[Job, str]:
        """The sandbox job, and the marker its result line starts with."""
        marker = f"\x1eagentflow-result-{secrets.token_hex(8)}:"
        data = json.dumps(inputs, ensure_ascii=False, default=str).encode()
        if self.language == "python":
            payload = {"code": self.code, "inputs": inputs, "name": self.name, "marker": marker}
            stdin = json.dumps(payload, ensure_ascii=False, default=str).encode()
            return Job(argv=("python3", "-I", "-c", HARNESS), stdin=stdin, limits=limits, workspace=workspace), marker
        if self.language == "shell":
            files = {"input.json": data, ".program.sh": self.code.encode()}
            argv = ("sh", f"{WORKDIR}/.program.sh")
            return Job(argv=argv, stdin=data, limits=limits, files=files, workspace=workspace), marker
        raise ValueError(f"unknown language {self.language!r}; use python or shell")

    def outcome(self, result: Result, marker: str) -> tuple[Any, str]:
        """(the program's result, its log) — or ProgramError saying why there is none."""
        stdout = result.stdout.decode("utf-8", errors="replace")
        log = result.stderr.decode("utf-8", errors="replace")
        stopped = stopped_reason(result)
        if self.language == "shell":
            if stopped:
                raise ProgramError(f"{stopped}{_tail(log or stdout)}", result)
            if result.exit_code != 0:
                raise ProgramError(f"the shell program exited with status {result.exit_code}{_tail(log)}", result)
            return _maybe_json(stdout), log
        record = _result_record(stdout, marker)
        if stopped:
            raise ProgramError(f"{stopped}{_tail(log)}", result)
        if record is None:
            raise ProgramError(
                f"the program ended (status {result.exit_code}) without a result{_tail(log)}",
                result,
            )
        if "error" in record:
            raise ProgramError(str(record["error"]) + _tail(log, "\nits log ended with:\n"), result)
        return record.get("result"), log


def stopped_reason(result: Result) -> str | None:
    limits = {
        "wall": "it ran past its wall-clock limit (limits.wall)",
        "cpu": "it used up its CPU time (limits.cpu)",
        "memory": "it ran out of memory (limits.memory)",
        "output": "it wrote more output than allowed (limits.output)",
        "pids": "it started too many processes (limits.pids)",
        "disk": "it filled its workspace (limits.disk)",
    }
    if result.killed is None:
        return None
    return f"the sandbox stopped the program: {limits.get(result.killed, result.killed)}"


def _result_record(stdout: str, marker: str) -> dict[str, Any] | None:
    for line in reversed(stdout.split("\n")):  # not splitlines(): the marker starts with \x1e, a line break to it
        if line.startswith(marker):
            try:
                record = json.loads(line[len(marker) :])
            except ValueError:
                return None
            return record if isinstance(record, dict) else None
    return None


def _maybe_json(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"') or stripped in ("true", "false", "null") or _is_number(stripped):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    return stripped


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _tail(log: str, lead: str = "; its log ended with:\n") -> str:
    log = log.strip()
    if not log:
        return ""
    return lead + (log if len(log) <= LOG_TAIL else "…" + log[-LOG_TAIL:])
