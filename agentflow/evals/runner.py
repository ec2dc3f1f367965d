"""The run loop: every case through the executor of this process, a few at a time, each waited for.

Inputs are checked for every case before the first run starts, so a bad case costs nothing.
A case's latency is its run's wall time, its cost what the run spent (the ledger's figure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.evals.dataset import Case
from agentflow.evals.target import Target, TargetError

DEFAULT_CONCURRENCY = 4
Progress = Callable[[int, int], None]
"""Called with (cases done, cases in all) as runs finish."""


@dataclass(frozen=True, slots=True)
class CaseRun:
    case: Case
    index: int
    run_id: str
    status: str
    output: Any
    error: str | None
    latency_ms: float
    cost_usd: float
    tokens: int
    variant: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


async def run_cases(
    target: Target,
    cases: Sequence[Case],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    variant: str | None = None,
    on_progress: Progress | None = None,
) -> list[CaseRun]:
    """Run each case once (with `variant` forced on the target node, when given); results in case order."""
    from agentflow.engine.budget import BudgetExceededError
    from agentflow.trust.grants import NeedsGrantError

    prepared = [target.run_inputs(case) for case in cases]  # every case is checked before anything runs
    overrides = {"variants": {variant_node(target): variant}} if variant else None
    slots = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(index: int) -> CaseRun:
        nonlocal done
        async with slots:
            try:
                run = target.flow.submit(target.version, prepared[index], trigger="eval", overrides=overrides)
            except (NeedsGrantError, BudgetExceededError) as exc:
                raise TargetError(str(exc)) from None
            executor = target.flow.executor
            if await executor.run(run.id) is None:  # this process's queue loop took it first
                await executor.wait_for(run.id, statuses=TERMINAL_STATUSES | {"waiting_approval"})
            await target.flow.store.flush()
            record = await asyncio.to_thread(target.flow.store.get_run, run.id)
        assert record is not None
        done += 1
        if on_progress is not None:
            on_progress(done, len(cases))
        wall = (record.finished_at or 0) - (record.started_at or 0) if record.started_at else 0.0
        return CaseRun(
            case=cases[index],
            index=index,
            run_id=record.id,
            status=record.status,
            output=target.output(record) if record.status == "succeeded" else None,
            error=record.error if record.status != "waiting_approval" else "the run waits for an approval",
            latency_ms=round(max(wall, 0.0) * 1000, 3),
            cost_usd=round(record.cost_usd, 8),
            tokens=record.tokens,
            variant=variant,
        )

    return list(await asyncio.gather(*(one(index) for index in range(len(cases)))))


def variant_node(target: Target) -> str:
    """The node whose variants are compared: `--node`, else the workflow's only node with variants."""
    if target.node is not None:
        return target.node
    with_variants = [node_id for node_id, names in variants_of(target).items() if names]
    if len(with_variants) != 1:
        found = ", ".join(with_variants) or "none"
        raise TargetError(f"name the node whose variants to compare with --node (nodes with variants: {found})")
    return with_variants[0]


def variants_of(target: Target) -> dict[str, list[str]]:
    """Each node's variant names, in the order the workflow declares them."""
    found: dict[str, list[str]] = {}
    for node_id, node in target.workflow.spec.nodes.items():
        declared = getattr(node, "variants", None) or []
        found[node_id] = [str(getattr(variant, "name", variant)) for variant in declared]
    return found
