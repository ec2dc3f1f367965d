"""Run one segment of a run: from its start (or last checkpoint) to the end or a pause."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from langgraph.types import Command

from agentflow.engine.budget import BudgetExceededError, Meter
from agentflow.engine.compiler import (
    ApprovalRejectedError,
    NodeFailedError,
    compile_workflow,
    initial_state,
    short_output,
)
from agentflow.engine.context import RunContext, Services
from agentflow.engine.events import (
    ApprovalRequested,
    BudgetExceeded,
    EventBus,
    NodeFinished,
    RunFinished,
    RunStarted,
    RunStatus,
)
from agentflow.engine.nodes import NodeConfigError
from agentflow.engine.pins import pinned_outputs
from agentflow.engine.state import scope_of
from agentflow.engine.variant_draw import check_forced
from agentflow.spec.expressions import MissingSecret, render
from agentflow.spec.graph import Graph, analyze
from agentflow.spec.models import Workflow
from agentflow.store.base import RunRecord, Store
from agentflow.trust.capabilities import Capabilities
from agentflow.trust.egress import EgressPolicy
from agentflow.trust.grants import NeedsGrantError


@dataclass(slots=True)
class Compiled:
    workflow: Workflow
    graph: Graph
    app: Any
    capabilities: Capabilities
    path: str | None = None
    """The file the version was saved from: a code node's `file:` is relative to it."""


class Engine:
    """Compiles workflow versions (cached) and runs them durably."""

    def __init__(self, store: Store, services: Services, bus: EventBus) -> None:
        self.store = store
        self.services = services
        self.bus = bus
        self.saver = store.checkpointer()
        # Runs another process took over: stopped here without recording anything.
        self.abandoned: set[str] = set()
        self._compiled: dict[tuple[str, str], Compiled] = {}

    def compiled(self, name: str, version: str) -> Compiled:
        key = (name, version)
        if key not in self._compiled:
            stored = self.store.get_workflow(name, version)
            if stored is None:
                raise LookupError(f"workflow {name} version {version} is not in the store")
            from agentflow.spec.validate import load_workflow

            # Stored versions were validated when saved; rules added since must not lock old ones out.
            workflow = load_workflow(stored.source, stored.path or f"{name}@{version}", network_tools=())
            graph = analyze(workflow)
            app = compile_workflow(workflow, graph, self.saver)
            self._compiled[key] = Compiled(
                workflow, graph, app, self.services.grants.capabilities(workflow), stored.path
            )
        return self._compiled[key]

    def meter(
        self, workflow: Workflow, usage: dict[str, float] | None = None, limits: dict[str, float] | None = None
    ) -> Meter:
        """The run's budget meter, wired to the daily budgets when a ledger is configured; `limits` caps it
        (a sub-workflow's share of its parent's budget)."""
        ledger = self.services.ledger
        budget = workflow.spec.budget
        if ledger is None:
            return Meter(budget, usage, limits=limits)
        return Meter(
            budget,
            usage,
            guard=lambda: ledger.check(workflow.name, budget.daily_usd),
            on_spend=lambda usd: ledger.add(workflow.name, usd),
            limits=limits,
        )

    async def execute(
        self, run: RunRecord, *, decision: dict[str, Any] | None = None, fresh: bool = False
    ) -> RunStatus:
        """Run until the run ends or pauses; every outcome is recorded through events.

        `fresh` says the run never started, so there is no checkpoint to look for.
        """
        compiled = self.compiled(run.workflow, run.version)
        config = {"configurable": {"thread_id": run.id}, "recursion_limit": _recursion_limit(compiled.workflow)}
        usage = None
        pending_interrupt = False
        if fresh:
            self.saver.mark_new(run.id)
        else:
            await asyncio.to_thread(self.saver.preload, run.id)  # the checkpoint's rows, off the loop
            snapshot = await compiled.app.aget_state(config)
            fresh = not snapshot.values
            usage = None if fresh else snapshot.values.get("usage")
            pending_interrupt = bool(snapshot.interrupts)
        meter = self.meter(compiled.workflow, usage, run.limits)
        # The grant is checked again at every (re)start: a revoked grant stops a queued or waiting run.
        refusal: NeedsGrantError | None = None
        try:
            allowed = self.services.grants.require(compiled.workflow, run.version)
        except NeedsGrantError as exc:
            refusal, allowed = exc, Capabilities()
        ctx = RunContext(
            run_id=run.id,
            workflow=compiled.workflow,
            graph=compiled.graph,
            services=self.services,
            emit=self.bus.emit,
            meter=meter,
            allowed=allowed,
            egress=EgressPolicy.from_settings(self.services.settings, allowed.egress),
            source_path=compiled.path,
            pinned=pinned_outputs(run.overrides),
            variants=dict((run.overrides or {}).get("variants") or {}),
            **_who(run.reply_to),
        )
        if fresh:
            graph_input: Any = _start_state(compiled, run)
        elif decision is not None and pending_interrupt:
            graph_input = Command(resume=decision)
        else:
            graph_input = None
        self.bus.emit(
            RunStarted(
                run_id=run.id,
                workflow=run.workflow,
                version=run.version,
                resumed=not fresh,
                replay_of=_replay_of(run),
            )
        )
        if fresh and _replay_of(run):
            self._record_reused(ctx, compiled, run, graph_input)
        started = time.monotonic()
        remaining = None if meter.wall is None else max(meter.wall - run.active_s, 0.0)
        status: RunStatus = "succeeded"
        error: str | None = None
        outputs: dict[str, Any] | None = None
        try:
            if refusal is not None:
                raise refusal
            check_forced(compiled.workflow, ctx.variants)  # an unknown variant fails the run before any node
            if remaining is not None and remaining <= 0:
                raise BudgetExceededError("wall", run.active_s, meter.wall or 0)
            try:
                async with asyncio.timeout(remaining):
                    values = await compiled.app.ainvoke(graph_input, config, context=ctx, durability="sync")
            except TimeoutError:
                raise BudgetExceededError(
                    "wall", round(run.active_s + time.monotonic() - started, 3), meter.wall or 0
                ) from None
            interrupts = values.get("__interrupt__")
            if interrupts:
                payload = interrupts[0].value
                self.bus.emit(ApprovalRequested(run_id=run.id, node_id=payload["node_id"], message=payload["message"]))
                status = "waiting_approval"
            else:
                outputs = ctx.redact(_outputs(compiled, values))
        except BudgetExceededError as exc:
            status, error = "budget_exceeded", str(exc)
            self.bus.emit(BudgetExceeded(run_id=run.id, limit=exc.limit, used=exc.used, allowed=exc.allowed))
        except ApprovalRejectedError as exc:
            status, error = "rejected", str(exc)
        except (NodeFailedError, NodeConfigError) as exc:
            status, error = "failed", str(exc)
        except MissingSecret as exc:
            status, error = "failed", str(exc)
        except NeedsGrantError as exc:
            status, error = "failed", str(exc)
        except asyncio.CancelledError:
            if run.id in self.abandoned:
                raise
            status, error = "cancelled", "cancelled by request"
        except Exception as exc:  # a bug or an unexpected library error: record it, never lose the run
            status, error = "failed", ctx.redact(f"{type(exc).__name__}: {exc}")
        finally:
            if run.id in self.abandoned:
                self.abandoned.discard(run.id)
                self.saver.evict(run.id)
            else:
                await asyncio.to_thread(
                    self.store.update_run, run.id, active_s=run.active_s + time.monotonic() - started
                )
        if status != "waiting_approval":
            self.bus.emit(
                RunFinished(
                    run_id=run.id,
                    status=status,
                    outputs=outputs,
                    error=error,
                    tokens=meter.usage.tokens,
                    cost_usd=meter.usage.usd,
                )
            )
        self.saver.evict(run.id)
        await self.store.flush()
        return status

    def _record_reused(self, ctx: RunContext, compiled: Compiled, run: RunRecord, state: dict[str, Any]) -> None:
        """A replay's console, diff and trace show the results it starts with as nodes reused from its source."""
        source = run.overrides["replay"]["run_id"]  # type: ignore[index]
        results, statuses = state.get("results", {}), state.get("status", {})
        for node_id in compiled.graph.order:
            status = statuses.get(node_id)
            if status not in ("done", "skipped"):
                continue
            self.bus.emit(
                NodeFinished(
                    run_id=run.id,
                    node_id=node_id,
                    node_type=compiled.workflow.spec.nodes[node_id].type,
                    status="succeeded" if status == "done" else "skipped",
                    output=ctx.redact(short_output(results.get(node_id))) if status == "done" else None,
                    reused_from=source,
                )
            )


def _start_state(compiled: Compiled, run: RunRecord) -> Any:
    """Where a new run starts: at the workflow's roots, or, for a replay, in the state its source had
    before the node it replays from (agentflow/replay.py); the START edge routes to the running nodes."""
    replay = (run.overrides or {}).get("replay")
    if not replay:
        return initial_state(compiled.graph, run.inputs)
    return {**replay["state"], "inputs": run.inputs, "usage": {}}


def _replay_of(run: RunRecord) -> dict[str, Any] | None:
    """What a replay's RunStarted says it replays: the source run, the node, the nodes whose results it reuses."""
    replay = (run.overrides or {}).get("replay")
    if not replay:
        return None
    reused = replay.get("reused") or {}
    return {"run_id": replay["run_id"], "node_id": replay["node_id"], "reused": reused}


def _recursion_limit(workflow: Workflow) -> int:
    # Each node costs at most two supersteps (itself and a scheduler pass); loops multiply that.
    loops = sum(node.loop.max for node in workflow.spec.nodes.values() if node.loop) or 1
    estimate = 4 * len(workflow.spec.nodes) * loops + 10
    steps = workflow.spec.budget.steps
    return max(estimate, 2 * steps + 10) if steps else max(estimate, 1000)


def _outputs(compiled: Compiled, values: dict[str, Any]) -> dict[str, Any]:
    scope = scope_of(values)  # type: ignore[arg-type]
    declared = compiled.workflow.spec.outputs
    if declared:
        return {name: render(template, scope) for name, template in declared.items()}
    # Without declared outputs, a run yields the results of its last nodes.
    graph = compiled.graph
    sinks = [node_id for node_id in graph.order if not graph.succs[node_id]]
    status = values.get("status", {})
    return {node_id: scope.get(node_id) for node_id in sinks if status.get(node_id) == "done"}


def _who(reply_to: dict[str, Any] | None) -> dict[str, Any]:
    """The person and chat a channel-started run came from (its `user` and `session` memory)."""
    if not reply_to or not reply_to.get("channel"):
        return {}
    channel = str(reply_to["channel"])
    who: dict[str, Any] = {}
    if reply_to.get("user"):
        who["person"] = f"{channel}:{reply_to['user']}"
    if reply_to.get("chat"):
        who["session"] = f"{channel}:{reply_to['chat']}"
    return who
