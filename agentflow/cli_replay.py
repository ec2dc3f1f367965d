"""`agentflow replay RUN --from NODE [--set PATH=VALUE ...] [--json] [--wait]`: fork a new run from the state
RUN had before NODE, reusing every result upstream (replay.py makes the fork)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.replay import Fork
    from agentflow.runtime import AgentFlow
    from agentflow.store.base import RunRecord

COMMANDS = frozenset({"replay"})

Find = Callable[["AgentFlow", str], str]
Execute = Callable[["AgentFlow", str, bool, Callable[[], Awaitable[Any]]], Awaitable[int]]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay",
        help="fork a new run from the state before a node of a run, reusing every result upstream of it",
        description="Queue a new run of RUN's workflow version that starts where RUN was just before NODE ran: "
        "nothing upstream runs again. With --wait, run it here and show its progress.",
    )
    replay.add_argument("run_id", metavar="RUN", help="the run to replay: its id, or a unique prefix of it")
    replay.add_argument("--from", dest="from_node", required=True, metavar="NODE", help="the node to start at")
    replay.add_argument(
        "--set",
        dest="edits",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="edit the forked state (repeatable): inputs.NAME=VALUE, or NODE=VALUE / NODE.field=VALUE for a node "
        "upstream of --from; VALUE is JSON, else text",
    )
    replay.add_argument("--wait", action="store_true", help="run the replay here and wait for its end")
    replay.add_argument("--json", action="store_true", help="print one JSON object on stdout")


async def run(flow: AgentFlow, args: argparse.Namespace, *, find: Find, execute: Execute) -> int:
    """Queue the replay (and with --wait, execute it here); a ReplayError says what to fix."""
    from agentflow.engine.budget import BudgetExceededError
    from agentflow.replay import ReplayError, parse_sets, replay
    from agentflow.trust.grants import NeedsGrantError

    source = flow.store.get_run(find(flow, args.run_id))
    assert source is not None
    try:
        new, fork = await replay(flow, source, args.from_node, parse_sets(args.edits))
    except (NeedsGrantError, BudgetExceededError) as exc:  # the version's grant was revoked, or money is spent
        raise ReplayError(f"replay refused: {exc}") from None
    about = described(new, fork)
    if not args.wait:
        if args.json:
            print(json.dumps({"run_id": new.id, "status": new.status, **about}, ensure_ascii=False))
        else:
            print(f"queued run {new.id}: a replay of run {source.id[:12]} from {fork.node_id}")
            print(fork.reused.line(fork.node_id))
            print(
                "a server or `agentflow worker` on this data runs it; or run it here: "
                f"agentflow resume {new.id[:12]} (or replay with --wait)"
            )
        return 0
    print(fork.reused.line(fork.node_id), file=sys.stderr if args.json else sys.stdout)
    start = lambda: flow.executor.run(new.id)  # noqa: E731
    if not args.json:
        return await execute(flow, new.id, False, start)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):  # the run's own --json object, which the replay's facts join
        code = await execute(flow, new.id, True, start)
    print(json.dumps({**json.loads(summary.getvalue()), **about}, ensure_ascii=False, default=str))
    return code


def described(new: RunRecord, fork: Fork) -> dict[str, Any]:
    """The replay's facts in --json: the workflow, the source and node, and what was reused."""
    return {
        "workflow": new.workflow,
        "version": new.version,
        "replay_of": {"run_id": fork.source.id, "node_id": fork.node_id},
        "reused": fork.reused.to_dict(),
    }
