"""`agentflow analyse RUN [--model M] [--json]`: a model's reading of a run's trace (analyse.py asks it)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

COMMANDS = frozenset({"analyse"})


class AnalyseUsageError(Exception):
    """No model, or the model could not answer: printed as an error, exit code 2."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    analyse = commands.add_parser(
        "analyse", help="ask a model why a run failed or was slow: a root cause and the spans it points at"
    )
    analyse.add_argument("run_id", metavar="RUN", help="a run id, or a unique prefix of one")
    analyse.add_argument("--model", help="the model to ask (default AGENTFLOW_ANALYSE_MODEL, else the chat's model)")
    analyse.add_argument("--json", action="store_true", help="print the analysis as one JSON object")


async def run(flow: AgentFlow, args: argparse.Namespace, *, find: Callable[[AgentFlow, str], str]) -> int:
    from agentflow.analyse import AnalyseError, analyse_run
    from agentflow.engine.budget import BudgetExceededError

    record = flow.store.get_run(find(flow, args.run_id))
    assert record is not None
    try:
        analysis = await analyse_run(flow, record, model=args.model)
    except (AnalyseError, BudgetExceededError) as exc:
        raise AnalyseUsageError(str(exc)) from None
    if args.json:
        print(json.dumps(analysis.to_dict(), ensure_ascii=False))
    else:
        print(f"run {record.id}  {record.workflow}  {record.status}")
        print(analysis.markdown())
    return 0
