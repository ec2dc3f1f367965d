"""`agentflow --server URL ...`: `run`, `runs`, `approve`, `cancel` and `logs` against a server, through the SDK.

The output and the exit codes are the local commands' (agentflow/cli.py): the same progress lines, the
same `--json` objects. Nothing here reads or writes this machine's data directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentflow.cli import EXIT_CODES, USAGE_ERROR, CLIError, parse_inputs, print_event
from agentflow.client import (
    AgentFlowClient,
    AgentFlowError,
    AuthenticationError,
    BudgetSpentError,
    InvalidRequestError,
    ServerUnreachableError,
)
from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.progress import ProgressPrinter, render_events, render_run, render_run_list
from agentflow.web.models import RunDetail

COMMANDS = frozenset({"run", "runs", "approve", "cancel", "logs"})
SERVER_HINT = "or point --server / AGENTFLOW_SERVER at a running server"


def main(args: argparse.Namespace, server: str, token: str | None) -> int:
    try:
        client = AgentFlowClient(server, token)
    except AgentFlowError as exc:
        raise CLIError(f"{exc} (from --server or AGENTFLOW_SERVER)") from None
    command: Callable[[AgentFlowClient, argparse.Namespace], int] = {
        "run": _run,
        "runs": _runs,
        "approve": _approve,
        "cancel": _cancel,
        "logs": _logs,
    }[args.command]
    with client:
        try:
            return command(client, args)
        except ServerUnreachableError as exc:
            raise CLIError(f"{exc}, {SERVER_HINT}") from None
        except AuthenticationError as exc:
            if token:
                raise CLIError(
                    f"the server at {server} refused the token (from --token or AGENTFLOW_API_TOKEN): {exc}"
                ) from None
            raise CLIError(f"{exc}; pass it with --token or AGENTFLOW_API_TOKEN") from None
        except AgentFlowError as exc:
            raise CLIError(str(exc)) from None


def _run(client: AgentFlowClient, args: argparse.Namespace) -> int:
    try:
        source = Path(args.file).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        print(f"{args.file}:1:1: the file is not UTF-8 text ({exc.reason})", file=sys.stderr)
        return USAGE_ERROR
    inputs = parse_inputs(args.input)
    try:
        # Saved with the token's credentials: the server grants what it needs, as `agentflow run` does locally.
        stored = client.workflows.save(source)
    except InvalidRequestError as exc:
        if not exc.problems:
            raise
        for problem in exc.problems:
            print(f"{args.file}:{problem.line}:{problem.column}: {problem.message}", file=sys.stderr)
        return USAGE_ERROR
    try:
        run = client.runs.create(stored.name, inputs, version=stored.version)
    except InvalidRequestError as exc:
        raise CLIError(f"{args.file}: {exc}") from None
    except BudgetSpentError as exc:
        print(f"error: run refused: {exc}", file=sys.stderr)
        return EXIT_CODES["budget_exceeded"]
    return _follow(client, run.run_id, after=0, as_json=args.json)


def _follow(client: AgentFlowClient, run_id: str, *, after: int, as_json: bool) -> int:
    """Show the run's progress until it ends or waits for a person, then report it as `agentflow run` does."""
    printer = ProgressPrinter(sys.stderr if as_json else sys.stdout, enabled=not as_json or sys.stderr.isatty())
    last = after
    try:
        while True:
            for event in client.runs.stream(run_id, after=last):
                last = event.id
                if printer.enabled:
                    printer.show(event.model_dump())
                if event.type == "approval_requested":
                    break  # the stream stays open while the run waits; we stop following here
            detail = client.runs.get(run_id)
            if detail.status in TERMINAL_STATUSES or detail.status == "waiting_approval":
                break  # else someone decided already: the run goes on, and so do we
    except KeyboardInterrupt:
        print(
            f"\nstopped following; run {run_id} goes on on the server: agentflow logs {run_id[:12]} --follow",
            file=sys.stderr,
        )
        return 130
    _report(detail, as_json)
    return EXIT_CODES.get(detail.status, 1)


def _summary(detail: RunDetail) -> dict[str, Any]:
    """The local `--json` shape: `run_summary` with its nodes, and `approval` only while one is pending."""
    summary = detail.model_dump(exclude={"cancel_requested", "approval"})
    if detail.approval is not None:
        summary["approval"] = detail.approval.model_dump()
    return summary


def _report(detail: RunDetail, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_summary(detail), ensure_ascii=False, default=str))
    else:
        print(render_run(_summary(detail), detail.approval))


def _runs(client: AgentFlowClient, args: argparse.Namespace) -> int:
    if args.runs_command == "list":
        found = client.runs.list(status=tuple(args.status), workflow=args.workflow, limit=args.limit)
        runs = [run.model_dump() for run in found]
        print(json.dumps(runs, default=str) if args.json else render_run_list(runs))
        return 0
    detail = client.runs.get(args.run_id)
    events = client.runs.events(detail.run_id).events if args.events else None
    if args.json:
        summary = _summary(detail)
        if events is not None:
            summary["events"] = events
        print(json.dumps(summary, ensure_ascii=False, default=str))
        return 0
    print(render_run(_summary(detail), detail.approval))
    if events is not None:
        print(render_events(events))
    return 0


def _approve(client: AgentFlowClient, args: argparse.Namespace) -> int:
    detail = client.runs.get(args.run_id)
    run_id = detail.run_id
    if detail.approval is None:
        raise CLIError(f"run {run_id} has no pending approval (its status is {detail.status})")
    # The run waits: nothing is recorded between this read and the decision. Follow from here.
    after = client.runs.events(run_id).last_id
    decide = client.runs.reject if args.reject else client.runs.approve
    decide(run_id, comment=args.comment)
    if not args.json:
        verb = "rejected" if args.reject else "approved"
        print(f"{verb} '{detail.approval.node_id}' of run {run_id}; continuing…")
    return _follow(client, run_id, after=after, as_json=args.json)


def _cancel(client: AgentFlowClient, args: argparse.Namespace) -> int:
    detail = client.runs.cancel(args.run_id)
    if detail.status == "cancelled":
        print(f"cancelled run {detail.run_id}")
    else:
        print(f"cancel requested; the server stops run {detail.run_id} within a second")
    return 0


def _logs(client: AgentFlowClient, args: argparse.Namespace) -> int:
    show = print_event(as_json=args.json)
    if not args.follow:
        for event in client.runs.events(args.run_id, after=args.after).events:
            show(event)
        return 0
    try:
        for streamed in client.runs.stream(args.run_id, after=args.after):
            show(streamed.model_dump())
    except KeyboardInterrupt:
        return 130
    return 0
