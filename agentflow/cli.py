"""`agentflow`: the command line other tools script against.

Commands work on this machine's data directory, or, with `--server URL` (or AGENTFLOW_SERVER), `run`,
`runs`, `approve`, `cancel` and `logs` work against a server through the SDK (agentflow/cli_remote.py).
Exit codes: 0 succeeded, 1 run failed, 2 bad usage or invalid workflow/inputs,
3 waiting for approval, 4 budget exceeded, 5 cancelled or rejected.
Heavy modules (langgraph, litellm) are imported only by commands that run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

EXIT_CODES = {
    "succeeded": 0,
    "failed": 1,
    "waiting_approval": 3,
    "budget_exceeded": 4,
    "cancelled": 5,
    "rejected": 5,
}
USAGE_ERROR = 2
LOGS_RECHECK_SECONDS = 0.5


class CLIError(Exception):
    """A user mistake: printed without a traceback, exit code 2."""


def _remote_options() -> argparse.ArgumentParser:
    """`--server` and `--token`, accepted before the command and after the commands that work remotely."""
    options = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the command is not reset by the subcommand's own default.
    options.add_argument(
        "--server",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="work against this AgentFlow server (default $AGENTFLOW_SERVER) instead of this machine's data",
    )
    options.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="the server's API token (default $AGENTFLOW_API_TOKEN)",
    )
    return options


def _parser() -> argparse.ArgumentParser:
    remote = _remote_options()
    parser = argparse.ArgumentParser(
        prog="agentflow",
        description="Validate and run AgentFlow workflows (YAML, apiVersion agentflow/v1).",
        epilog="Data lives in $AGENTFLOW_HOME (default ./data), or on the server given by --server. "
        "Docs: docs/workflow-spec.md",
        parents=[remote],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check workflow files; errors as file:line:col: message")
    validate.add_argument("files", nargs="+", metavar="FILE")

    run = commands.add_parser("run", help="run a workflow and show its progress", parents=[remote])
    run.add_argument("file", metavar="FILE")
    run.add_argument("-i", "--input", action="append", default=[], metavar="KEY=VALUE", help="an input (repeatable)")
    run.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")

    runs = commands.add_parser("runs", help="list runs or show one")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="list|show")
    runs_list = runs_commands.add_parser("list", help="recent runs", parents=[remote])
    runs_list.add_argument("--status", action="append", default=[])
    runs_list.add_argument("--workflow")
    runs_list.add_argument("--limit", type=int, default=20)
    runs_list.add_argument("--json", action="store_true")
    runs_show = runs_commands.add_parser("show", help="one run with its nodes", parents=[remote])
    runs_show.add_argument("run_id", metavar="RUN_ID")
    runs_show.add_argument("--json", action="store_true")
    runs_show.add_argument("--events", action="store_true", help="include the event log")

    resume = commands.add_parser("resume", help="continue a run from its last checkpoint (after a crash or failure)")
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument("--json", action="store_true")

    approve = commands.add_parser(
        "approve", help="decide a run waiting for approval, then continue it", parents=[remote]
    )
    approve.add_argument("run_id", metavar="RUN_ID")
    approve.add_argument("--reject", action="store_true", help="reject instead of approving")
    approve.add_argument("--comment", help="a note recorded with the decision")
    approve.add_argument("--json", action="store_true")

    cancel = commands.add_parser("cancel", help="cancel a queued, waiting or running run", parents=[remote])
    cancel.add_argument("run_id", metavar="RUN_ID")

    logs = commands.add_parser("logs", help="a run's events, one line each; --follow streams them", parents=[remote])
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new events until the run ends")
    logs.add_argument("--after", type=int, default=0, metavar="EVENT_ID", help="only events after this event id")
    logs.add_argument("--json", action="store_true", help="one JSON object per event and line")

    commands.add_parser("schema", help="print the workflow JSON Schema")

    from agentflow.cli_grants import add_parsers as add_grant_parsers

    add_grant_parsers(commands)

    from agentflow.cli_triggers import add_parsers as add_trigger_parsers

    add_trigger_parsers(commands)

    from agentflow.cli_tools import add_parsers as add_tool_parsers

    add_tool_parsers(commands)

    from agentflow.cli_memory import add_parsers as add_memory_parsers

    add_memory_parsers(commands)

    from agentflow.cli_diff import add_parsers as add_diff_parsers

    add_diff_parsers(commands)

    from agentflow.cli_replay import add_parsers as add_replay_parsers

    add_replay_parsers(commands)

    from agentflow.cli_test import add_parsers as add_test_parsers

    add_test_parsers(commands)

    from agentflow.cli_analyse import add_parsers as add_analyse_parsers

    add_analyse_parsers(commands)

    from agentflow.cli_eval import add_parsers as add_eval_parsers

    add_eval_parsers(commands)

    from agentflow.cli_optimize import add_parsers as add_optimize_parsers

    add_optimize_parsers(commands)

    from agentflow.cli_agents import add_parsers as add_agent_registry_parsers

    add_agent_registry_parsers(commands)

    from agentflow.cli_agent import add_parsers as add_agent_process_parsers

    add_agent_process_parsers(commands)

    from agentflow.cli_prompts import add_parsers as add_prompt_parsers

    add_prompt_parsers(commands)

    from agentflow.cli_variants import add_parsers as add_variant_parsers

    add_variant_parsers(commands)

    chat = commands.add_parser("chat", help="talk to the assistant in this terminal (same sessions as the web app)")
    chat.add_argument("--session", default="terminal", help="conversation to continue (default: terminal)")
    chat.add_argument("--model", help="the assistant's model (default: AGENTFLOW_MODEL or the first detected)")

    costs = commands.add_parser("costs", help="spend and tokens from the cost ledger")
    costs.add_argument(
        "--since", default="30d", help="a date (2026-11-01), or a span back from now: 7d, 24h (default 30d)"
    )
    costs.add_argument("--by", default="day", choices=["day", "model", "provider", "workflow", "node"])
    costs.add_argument("--json", action="store_true")

    profile = commands.add_parser("profile", help="per-node latency, retries, critical path and cost of a workflow")
    profile.add_argument("workflow", metavar="WORKFLOW", help="the workflow's name (metadata.name)")
    profile.add_argument("--last", type=int, default=200, help="how many recent finished runs (default 200)")
    profile.add_argument("--json", action="store_true")

    serve = commands.add_parser("serve", help="start the web app (same as python app.py)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    worker = commands.add_parser(
        "worker", help="execute queued runs until interrupted (with AGENTFLOW_DATABASE_URL: from the Postgres queue)"
    )
    worker.add_argument("--concurrency", type=int, default=None, help="runs at a time (AGENTFLOW_MAX_CONCURRENT_RUNS)")

    migrate = commands.add_parser(
        "migrate", help="create or upgrade the database's tables (once, under a lock; safe to run concurrently)"
    )
    migrate.add_argument("--check", action="store_true", help="only say which migrations are pending (exit 1 if any)")
    return parser


# Commands that never touch run data: the same with or without a server.
MACHINE_COMMANDS = frozenset({"validate", "schema", "serve", "agent"})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        server = _server(args)
        if server and args.command not in MACHINE_COMMANDS:
            from agentflow import cli_remote

            if args.command not in cli_remote.COMMANDS:
                source = "--server" if hasattr(args, "server") else f"AGENTFLOW_SERVER={server}"
                raise CLIError(
                    f"`agentflow {args.command}` works on this machine's data only, not against a server "
                    f"({source}); run it where the server runs, or without {source.split('=')[0]}. "
                    f"Against a server: {', '.join(sorted(cli_remote.COMMANDS))}"
                )
            token = getattr(args, "token", None) or os.environ.get("AGENTFLOW_API_TOKEN") or None
            return cli_remote.main(args, server, token)
        if args.command == "validate":
            return _validate(args.files)
        if args.command == "serve":
            return _serve(args)
        if args.command == "migrate":
            return _migrate(args)
        if args.command in ("tools", "sandbox"):
            return _tools(args)
        if args.command == "memory":
            return _memory(args)
        if args.command == "agents":
            return _agents(args)
        if args.command == "agent":
            return _agent(args)
        if args.command == "prompts":
            return _prompts(args)
        if args.command == "schema":
            from agentflow.spec.schema import workflow_json_schema

            print(json.dumps(workflow_json_schema(), indent=2, sort_keys=True))
            return 0
        import asyncio  # not needed by validate/schema/--help, which must start fast

        return asyncio.run(_dispatch(args))
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


def _server(args: argparse.Namespace) -> str | None:
    """The server to work against: --server, else AGENTFLOW_SERVER; None (or `--server ''`) for local data."""
    server: str | None = getattr(args, "server", None)
    if server is None:
        server = os.environ.get("AGENTFLOW_SERVER")
    return (server or "").strip() or None


def _validate(files: list[str]) -> int:
    # This process only validates: pydantic's plugin discovery (importlib.metadata) is pure start-up cost.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from agentflow.settings import Settings, SettingsError
    from agentflow.spec.errors import SpecErrors
    from agentflow.spec.validate import load_workflow_file
    from agentflow.tools.registry import builtin_registry

    try:
        tools = builtin_registry(Settings.from_env())  # installed tools and the operator's; nothing connects
    except SettingsError as exc:
        raise CLIError(str(exc)) from None
    failed = False
    for path in files:
        try:
            workflow = load_workflow_file(path, known_tools=tools.known_names(), network_tools=tools.network_names())
        except SpecErrors as exc:
            failed = True
            print(str(exc), file=sys.stderr)
        except OSError as exc:
            failed = True
            print(f"{path}:1:1: cannot read the file: {exc.strerror or exc}", file=sys.stderr)
        else:
            print(f"{path}: valid workflow '{workflow.name}' ({len(workflow.spec.nodes)} nodes)")
    return 1 if failed else 0


async def _dispatch(args: argparse.Namespace) -> int:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings, SettingsError

    try:
        # Long-lived commands export traces; one-shot runs leave theirs to the next app or worker start.
        flow = AgentFlow.open(tracing=args.command in ("worker", "chat") and Settings.from_env().tracing)
    except SettingsError as exc:
        raise CLIError(str(exc)) from None
    try:
        if args.command == "run":
            return await _run(flow, args)
        if args.command == "runs":
            return _runs(flow, args)
        if args.command == "resume":
            return await _resume(flow, args)
        if args.command == "approve":
            return await _approve(flow, args)
        if args.command == "cancel":
            return _cancel(flow, args)
        if args.command == "logs":
            return await _logs(flow, args)
        if args.command == "worker":
            return await _worker(flow, args)
        if args.command == "chat":
            return await _chat(flow, args)
        if args.command == "costs":
            return _costs(flow, args)
        if args.command == "profile":
            return _profile(flow, args)
        if args.command == "diff":
            return _diff(flow, args)
        if args.command == "replay":
            return await _replay(flow, args)
        if args.command == "test":
            return await _test(flow, args)
        if args.command == "analyse":
            return await _analyse(flow, args)
        if args.command == "variants":
            return _variants(flow, args)
        if args.command == "eval":
            return await _eval(flow, args)
        if args.command == "optimize":
            return await _optimize(flow, args)
        if args.command in ("grant", "grants", "secrets"):
            return _trust(flow, args)
        from agentflow import cli_triggers

        if args.command in cli_triggers.COMMANDS:
            return _triggers(flow, args)
        raise CLIError(f"unknown command {args.command}")
    finally:
        await flow.store.flush()
        flow.close()


def _trust(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_grants

    try:
        command = {"grant": cli_grants.grant, "grants": cli_grants.grants, "secrets": cli_grants.secrets}
        return command[args.command](flow, args)
    except cli_grants.GrantUsageError as exc:
        raise CLIError(str(exc)) from None


def _tools(args: argparse.Namespace) -> int:
    from agentflow import cli_tools
    from agentflow.settings import Settings, SettingsError

    try:
        return cli_tools.run(Settings.from_env(), args)
    except (cli_tools.ToolsUsageError, SettingsError) as exc:
        raise CLIError(str(exc)) from None


def _memory(args: argparse.Namespace) -> int:
    from agentflow import cli_memory
    from agentflow.settings import Settings, SettingsError

    try:
        return cli_memory.run(Settings.from_env(), args)
    except (cli_memory.MemoryUsageError, SettingsError) as exc:
        raise CLIError(str(exc)) from None


def _agents(args: argparse.Namespace) -> int:
    from agentflow import cli_agents
    from agentflow.settings import Settings, SettingsError

    try:
        return cli_agents.run(Settings.from_env(), args)
    except (cli_agents.AgentsUsageError, SettingsError) as exc:
        raise CLIError(str(exc)) from None


def _agent(args: argparse.Namespace) -> int:
    from agentflow import cli_agent

    try:
        return cli_agent.run(args)
    except cli_agent.AgentUsageError as exc:
        raise CLIError(str(exc)) from None


def _triggers(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_triggers

    try:
        return cli_triggers.run(flow, args)
    except cli_triggers.TriggerUsageError as exc:
        raise CLIError(str(exc)) from None


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    from agentflow.engine.inputs import InputError, parse_pairs

    try:
        return dict(parse_pairs(pairs, example="-i ticket='my printer is on fire'"))
    except InputError as exc:
        raise CLIError(f"input {exc}") from None


async def _run(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.cli_grants import person
    from agentflow.engine.budget import BudgetExceededError
    from agentflow.engine.inputs import InputError
    from agentflow.spec.errors import SpecErrors

    try:
        version = flow.save_workflow_file(args.file)
        # The person running their own file grants what it needs, and is told what that is.
        granted = flow.grant_version(version, by=person(), note=f"agentflow run {args.file}")
        if granted is not None:
            print(f"granted by {granted.granted_by}: {flow.review(version).wanted.describe()}", file=sys.stderr)
        run = flow.submit(version, parse_inputs(args.input))
    except SpecErrors as exc:
        print(str(exc), file=sys.stderr)
        return USAGE_ERROR
    except InputError as exc:
        raise CLIError(f"{args.file}: {exc}") from None
    except BudgetExceededError as exc:
        print(f"error: run refused: {exc}", file=sys.stderr)
        return EXIT_CODES["budget_exceeded"]
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    return await _execute(flow, run.id, args.json, lambda: flow.executor.run(run.id))


async def _execute(flow: AgentFlow, run_id: str, as_json: bool, start: Any) -> int:
    from agentflow.progress import ProgressPrinter

    printer = ProgressPrinter(sys.stderr if as_json else sys.stdout, enabled=not as_json or sys.stderr.isatty())
    unsubscribe = flow.bus.subscribe(printer)
    # Heartbeats and `agentflow cancel` from other processes apply to this foreground run too.
    await flow.executor.start(drain=False)
    try:
        status = await start()
    finally:
        unsubscribe()
        await flow.executor.stop()
    if status is None:
        raise CLIError(
            f"run {run_id} is being executed by another process; follow it with: agentflow runs show {run_id}"
        )
    await flow.store.flush()
    _report(flow, run_id, as_json)
    return EXIT_CODES.get(status, 1)


def _report(flow: AgentFlow, run_id: str, as_json: bool) -> None:
    from agentflow.progress import approval_summary, render_run, run_summary

    run = flow.store.get_run(run_id)
    assert run is not None
    summary = run_summary(run, flow.store.node_runs(run_id))
    approval = flow.store.pending_approval(run_id) if run.status == "waiting_approval" else None
    if as_json:
        if approval is not None:  # the same shape as `runs show --json` and the REST API
            summary["approval"] = approval_summary(approval)
        print(json.dumps(summary, ensure_ascii=False, default=str))
        return
    print(render_run(summary, approval))


def _find(flow: AgentFlow, run_id: str) -> str:
    if flow.store.get_run(run_id) is not None:
        return run_id
    matches = flow.store.find_run(run_id)
    if len(matches) == 1:
        return matches[0].id
    if not matches:
        raise CLIError(f"no run '{run_id}'; list them with: agentflow runs list")
    raise CLIError(f"'{run_id}' matches several runs ({', '.join(m.id[:12] for m in matches)}); give more of the id")


async def _replay(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_replay
    from agentflow.replay import ReplayError

    try:
        return await cli_replay.run(flow, args, find=_find, execute=_execute)
    except ReplayError as exc:
        raise CLIError(str(exc)) from None


async def _test(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_test

    try:
        return await cli_test.run(flow, args)
    except cli_test.TestUsageError as exc:
        raise CLIError(str(exc)) from None


async def _optimize(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_optimize

    try:
        return await cli_optimize.run(flow, args)
    except cli_optimize.OptimizeUsageError as exc:
        raise CLIError(str(exc)) from None


async def _eval(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_eval

    try:
        return await cli_eval.run(flow, args)
    except cli_eval.EvalUsageError as exc:
        raise CLIError(str(exc)) from None


async def _analyse(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_analyse

    try:
        return await cli_analyse.run(flow, args, find=_find)
    except cli_analyse.AnalyseUsageError as exc:
        raise CLIError(str(exc)) from None


def _prompts(args: argparse.Namespace) -> int:
    from agentflow import cli_prompts

    try:
        return cli_prompts.main(args)
    except cli_prompts.PromptsUsageError as exc:
        raise CLIError(str(exc)) from None


def _variants(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_variants
    from agentflow.variant_runs import VariantsError, node_variants

    try:
        nodes = node_variants(flow.store, args.workflow, node=args.node, last=args.last)
    except VariantsError as exc:
        raise CLIError(str(exc)) from None
    return cli_variants.print_variants(nodes, as_json=args.json)


def _diff(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow import cli_diff
    from agentflow.runs_diff import diff_runs

    run_a, run_b = (flow.store.get_run(_find(flow, run_id)) for run_id in (args.run_a, args.run_b))
    assert run_a is not None and run_b is not None
    return cli_diff.print_diff(diff_runs(flow.store, run_a, run_b), as_json=args.json)


def _runs(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.progress import approval_summary, render_events, render_run, render_run_list, run_summary

    if args.runs_command == "list":
        runs = flow.store.list_runs(limit=args.limit, statuses=tuple(args.status), workflow=args.workflow)
        if args.json:
            print(json.dumps([run_summary(run, None) for run in runs], default=str))
        else:
            print(render_run_list([run_summary(run, None) for run in runs]))
        return 0
    run_id = _find(flow, args.run_id)
    run = flow.store.get_run(run_id)
    assert run is not None
    summary = run_summary(run, flow.store.node_runs(run_id))
    approval = flow.store.pending_approval(run_id) if run.status == "waiting_approval" else None
    events = flow.store.events(run_id) if args.events else None
    if args.json:
        if approval is not None:
            summary["approval"] = approval_summary(approval)
        if events is not None:
            summary["events"] = events
        print(json.dumps(summary, ensure_ascii=False, default=str))
        return 0
    print(render_run(summary, approval))
    if events is not None:
        print(render_events(events))
    return 0


async def _resume(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.engine.executor import owner_is_gone

    run_id = _find(flow, args.run_id)
    run = flow.store.get_run(run_id)
    assert run is not None
    if run.status == "waiting_approval":
        raise CLIError(f"run {run_id} waits for approval; decide with: agentflow approve {run_id} [--reject]")
    if run.status == "succeeded":
        raise CLIError(f"run {run_id} already succeeded; nothing to resume")
    if run.status == "running":
        if not owner_is_gone(run.owner, run.heartbeat_at):
            raise CLIError(f"run {run_id} is running in another live process ({run.owner}); it cannot be resumed twice")
        return await _execute(flow, run_id, args.json, lambda: flow.executor.take_over(run_id))
    statuses = ("queued", "failed", "cancelled")
    if run.status not in statuses:
        raise CLIError(f"run {run_id} ended as {run.status}; it cannot be resumed")
    flow.store.update_run(run_id, error=None, finished_at=None, cancel_requested=0)
    return await _execute(flow, run_id, args.json, lambda: flow.executor.run(run_id, statuses=statuses))


async def _approve(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.cli_grants import person

    run_id = _find(flow, args.run_id)
    approval = flow.store.decide_approval(run_id, approved=not args.reject, comment=args.comment, decided_by=person())
    if approval is None:
        run = flow.store.get_run(run_id)
        status = run.status if run else "unknown"
        raise CLIError(f"run {run_id} has no pending approval (its status is {status})")
    verb = "approved" if approval.status == "approved" else "rejected"
    if not args.json:
        print(f"{verb} '{approval.node_id}' of run {run_id}; continuing…")
    return await _execute(flow, run_id, args.json, lambda: flow.executor.run(run_id))


def _cancel(flow: AgentFlow, args: argparse.Namespace) -> int:
    run_id = _find(flow, args.run_id)
    run = flow.store.get_run(run_id)
    assert run is not None
    if not flow.store.request_cancel(run_id):
        raise CLIError(f"run {run_id} is {run.status}; only queued, waiting or running runs can be cancelled")
    if run.status == "running":
        print(f"cancel requested; the process running {run_id} stops it within a second")
    else:
        print(f"cancelled run {run_id}")
    return 0


async def _logs(flow: AgentFlow, args: argparse.Namespace) -> int:
    show = print_event(as_json=args.json)
    run_id = _find(flow, args.run_id)
    if not args.follow:
        for event in flow.store.events(run_id, after=args.after):
            show(event)
        return 0
    from agentflow.engine.feed import LiveFeed, follow

    # Runs execute in other processes (a server, workers): with SQLite, their events are noticed this often.
    feed = LiveFeed(flow.store, flow.bus, recheck_seconds=LOGS_RECHECK_SECONDS)
    await feed.start()
    try:
        async for followed in follow(feed, after=args.after, run_id=run_id, until_finished=True):
            show(followed)
    finally:
        await feed.stop()
    return 0


def print_event(*, as_json: bool) -> Callable[[dict[str, Any]], None]:
    """How `agentflow logs` prints one event: a readable line, or one JSON object a line."""
    from agentflow.progress import event_line

    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event, ensure_ascii=False, default=str) if as_json else event_line(event), flush=True)

    return show


def _migrate(args: argparse.Namespace) -> int:
    from agentflow.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise CLIError(str(exc)) from None
    if settings.database_url:
        from agentflow.store import postgres

        where = postgres._redacted(settings.database_url)
        try:
            if args.check:
                pending = postgres.pending_migrations(settings.database_url)
                print(f"{where}: " + (f"pending {', '.join(pending)}" if pending else "up to date"))
                return 1 if pending else 0
            applied = postgres.migrate(settings.database_url)
        except Exception as exc:  # psycopg's errors say what is wrong (host, auth, database)
            raise CLIError(f"cannot migrate {where}: {exc}".strip()) from None
    else:
        from agentflow.store.sqlite import SQLiteStore

        where = str(settings.db_path)
        if args.check:
            print(f"{where}: SQLite migrates itself when opened")
            return 0
        store = SQLiteStore(settings.db_path)
        store.close()
        applied = []
    print(f"{where}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    return 0


async def _worker(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.engine.executor import Executor
    from agentflow.progress import ProgressPrinter

    if args.concurrency:
        flow.executor = Executor(
            flow.engine, concurrency=args.concurrency, heartbeat_seconds=flow.settings.worker_heartbeat_s
        )
    flow.bus.subscribe(ProgressPrinter(sys.stdout, enabled=True))
    if flow.settings.distributed:
        from agentflow.engine.workers import Worker

        print(f"worker {flow.executor.owner}: taking runs from the queue in {flow.store.location}; Ctrl-C to stop")
        sys.stdout.flush()
        await Worker(flow, concurrency=args.concurrency).run()
        return 0
    print(f"worker {flow.executor.owner}: running queued runs from {flow.store.location}; Ctrl-C to stop")
    await flow.executor.start()
    try:
        import asyncio

        await asyncio.Event().wait()
    finally:
        await flow.executor.stop()
    return 0


def _since(text: str) -> float:
    import re
    import time
    from datetime import datetime

    span = re.fullmatch(r"(\d+)([dh])", text.strip())
    if span:
        return time.time() - int(span.group(1)) * (86400 if span.group(2) == "d" else 3600)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise CLIError(f"--since {text!r}: give a date such as 2026-11-01 or a span such as 7d or 24h") from None


def _costs(flow: AgentFlow, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from agentflow.observability.costs import spend

    rows = spend(flow.store, by=args.by, since=_since(args.since))
    if args.json:
        print(json.dumps([asdict(row) for row in rows]))
        return 0
    if not rows:
        print(f"no model calls since {args.since}")
        return 0
    print(f"{args.by:<40}{'calls':>8}{'tokens in':>12}{'tokens out':>12}{'cost':>14}")
    for row in rows:
        print(f"{row.key[:39]:<40}{row.calls:>8}{row.input_tokens:>12}{row.output_tokens:>12}{row.cost_usd:>14.6f}")
    total = sum(row.cost_usd for row in rows)
    print(f"{'total':<40}{sum(r.calls for r in rows):>8}{'':>24}{total:>14.6f}")
    ledger = flow.engine.services.ledger
    if ledger is not None and ledger.global_daily_usd is not None:
        print(f"today: ${ledger.today():.6f} of the ${ledger.global_daily_usd:g} daily budget")
    return 0


def _profile(flow: AgentFlow, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from agentflow.observability.profile import profile, render

    result = profile(flow.store, args.workflow, last=args.last)
    if args.json:
        print(
            json.dumps({"workflow": result.workflow, "runs": result.runs, "nodes": [asdict(n) for n in result.nodes]})
        )
    else:
        print(render(result))
    return 0 if result.runs else 1


async def _chat(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.channels.terminal import chat_loop
    from agentflow.chat.engine import ConversationEngine

    engine = ConversationEngine(flow, model=args.model)
    await flow.executor.start()
    try:
        await chat_loop(flow, engine, args.session)
    finally:
        await flow.executor.stop()
    return 0


def _serve(args: argparse.Namespace) -> int:
    if args.host:
        os.environ["AGENTFLOW_HOST"] = args.host
    if args.port:
        os.environ["AGENTFLOW_PORT"] = str(args.port)
    from agentflow.web.main import main as serve

    return serve()


if __name__ == "__main__":
    sys.exit(main())
