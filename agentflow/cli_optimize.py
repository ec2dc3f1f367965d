"""`agentflow optimize WORKFLOW --node N --data cases.jsonl`, and `optimize list | show ID | accept ID`.

A round proposes; it never saves a version. `accept` is a person saving the proposal as a new version
(agentflow/optimize.py, agentflow/evals/proposals.py; docs/optimize.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.evals.proposals import Proposal
    from agentflow.runtime import AgentFlow

COMMANDS = frozenset({"optimize"})
USAGE = (
    "agentflow optimize WORKFLOW --node NODE --data cases.jsonl [--optimizer metaprompt|gepa] [--model M]; "
    "agentflow optimize list [WORKFLOW]; agentflow optimize show ID; agentflow optimize accept ID"
)


class OptimizeUsageError(Exception):
    """A mistake in the optimize command's arguments (the CLI prints it, exit code 2)."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    optimize = commands.add_parser(
        "optimize",
        help="propose a better prompt for a node (mlflow.genai.optimize_prompts); a person accepts it",
        description=USAGE,
    )
    optimize.add_argument(
        "words", nargs="+", metavar="WORKFLOW", help="a stored workflow; or: list, show ID, accept ID"
    )
    optimize.add_argument("--node", help="the llm or agent node whose prompt to improve")
    optimize.add_argument("--data", metavar="FILE", help="the cases (JSONL), as for agentflow eval")
    optimize.add_argument("--optimizer", default="metaprompt", help="metaprompt (default) or gepa (pip install gepa)")
    optimize.add_argument("--model", help="the optimiser's model (default $AGENTFLOW_JUDGE_MODEL)")
    optimize.add_argument("--scorers", default="exact_match", help="what 'better' means, as for agentflow eval")
    optimize.add_argument("--judge", metavar="MODEL", help="the LLM judges' model (default $AGENTFLOW_JUDGE_MODEL)")
    optimize.add_argument("--version", help="the version to start from (default the current one)")
    optimize.add_argument("-o", "--output", metavar="FILE", help="also write the proposed YAML here")
    optimize.add_argument("--json", action="store_true")


async def run(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.evals import proposals

    words = list(args.words)
    try:
        if words[0] == "list" and len(words) <= 2:
            return _list(proposals.listing(flow.settings.home, words[1] if len(words) == 2 else None), args.json)
        if words[0] in ("show", "accept") and len(words) == 2:
            if words[0] == "show":
                proposal = proposals.load(flow.settings.home, words[1])
                print(json.dumps(proposal.to_dict(), default=str) if args.json else render(proposal))
                return 0
            return _accept(flow, words[1], args.json)
    except proposals.ProposalError as exc:
        raise OptimizeUsageError(str(exc)) from None
    if len(words) != 1:
        raise OptimizeUsageError(f"usage: {USAGE}")
    return await _optimize(flow, words[0], args)


async def _optimize(flow: AgentFlow, workflow: str, args: argparse.Namespace) -> int:
    from agentflow.cli_grants import person
    from agentflow.evals.dataset import DatasetError, load_cases
    from agentflow.optimize import OptimizeError, OptimizeOptions, optimize

    if not args.node or not args.data:
        raise OptimizeUsageError(f"give the node and the cases: agentflow optimize {workflow} --node NODE --data FILE")
    try:
        cases = load_cases(args.data)
    except DatasetError as exc:
        raise OptimizeUsageError(str(exc)) from None
    options = OptimizeOptions(
        workflow=workflow,
        node=args.node,
        cases=cases,
        optimizer=args.optimizer,
        model=args.model,
        scorers=args.scorers,
        judge=args.judge,
        version=args.version,
        by=person(),
    )
    await flow.executor.start(drain=False)
    try:
        proposal = await optimize(flow, options)
    except OptimizeError as exc:
        raise OptimizeUsageError(str(exc)) from None
    finally:
        await flow.executor.stop()
    if args.output:
        Path(args.output).write_text(proposal.proposed_source, encoding="utf-8")
    print(json.dumps(proposal.to_dict(), default=str) if args.json else render(proposal))
    return 0


def _accept(flow: AgentFlow, proposal_id: str, as_json: bool) -> int:
    from agentflow.cli_grants import person
    from agentflow.evals.proposals import accept
    from agentflow.versions import label

    stored = accept(flow, proposal_id, by=person())
    review = flow.review(stored)
    if as_json:
        print(json.dumps({"workflow": stored.name, "version": stored.version, "number": stored.number,
                          "needs_review": review.needs_review}))  # fmt: skip
        return 0
    print(f"saved proposal {proposal_id} as {stored.name} {label(stored)} ({stored.version})")
    if review.needs_review:
        print(f"it needs a grant before it runs: {review.missing.describe()}; {review.how_to_grant()}")
    return 0


def _list(found: list[Proposal], as_json: bool) -> int:
    if as_json:
        print(json.dumps([_line(proposal) for proposal in found], default=str))
        return 0
    if not found:
        print("no proposals yet; make one with: agentflow optimize WORKFLOW --node NODE --data cases.jsonl")
    for proposal in found:
        line = _line(proposal)
        print(
            f"{line['id']}  {line['workflow']}.{line['node']}  {line['status']}  "
            f"pass rate {_rate(line['current_pass_rate'])} → {_rate(line['proposed_pass_rate'])}"
        )
    return 0


def _line(proposal: Proposal) -> dict[str, object]:
    scores = proposal.scores()
    return {
        "id": proposal.id,
        "workflow": proposal.workflow,
        "node": proposal.node,
        "status": proposal.status,
        "created_at": proposal.created_at,
        "current_pass_rate": scores["current"]["pass_rate"],
        "proposed_pass_rate": scores["proposed"]["pass_rate"],
    }


def render(proposal: Proposal) -> str:
    scores = proposal.scores()
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proposal.created_at))
    base = f"v{proposal.base_number}" if proposal.base_number else proposal.base_version[:12]
    lines = [
        f"proposal {proposal.id}: {proposal.workflow} {base}, node {proposal.node} ({proposal.optimizer}, {when}) "
        f"— {proposal.status}",
        "scores on the same cases (current → proposed):",
        f"  pass rate  {_rate(scores['current']['pass_rate'])} → {_rate(scores['proposed']['pass_rate'])}",
    ]
    for name, value in scores["current"]["mean_scores"].items():
        lines.append(f"  {name}  {_mean(value)} → {_mean(scores['proposed']['mean_scores'].get(name))}")
    lines.append(f"  cost  ${scores['current']['cost_usd_total']:.6f} → ${scores['proposed']['cost_usd_total']:.6f}")
    lines.append("diff:")
    lines.extend("  " + line for line in proposal.diff.splitlines())
    if proposal.status == "proposed":
        lines.append(f"nothing is saved until a person accepts it: agentflow optimize accept {proposal.id}")
    return "\n".join(lines)


def _rate(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.0%}"


def _mean(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.2f}"
