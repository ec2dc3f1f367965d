"""Compile a workflow into a LangGraph `StateGraph`.

Each workflow node becomes a graph node that runs its executor (with retries
and a timeout), then decides what starts next from the merged state
(`scheduler.plan`) and returns a `Command(goto=...)`. When nodes finishing in
the same superstep could each be waiting for the other, they route to one
scheduler node that plans again over the merged state. `map` fans out with
`Send` to a branch node and fans in at the scheduler; `approval` pauses with
`interrupt`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send, interrupt

from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.context import RunContext
from agentflow.engine.events import ApprovalDecided, NodeFinished, NodeStarted
from agentflow.engine.nodes import EFFECTFUL, EXECUTORS, NodeConfigError, Outcome
from agentflow.engine.nodes.base import Attempt, attempting, node_inputs
from agentflow.engine.pins import answer
from agentflow.engine.scheduler import plan
from agentflow.engine.state import RunState, scope_of, truthy
from agentflow.engine.variant_draw import apply, chosen
from agentflow.spec.expressions import MissingSecret, evaluate, render
from agentflow.spec.graph import Graph
from agentflow.spec.models import ApprovalNode, MapNode, Workflow, parse_duration

SCHEDULER = "__schedule__"
BRANCH = "__branch__"
MAX_EVENT_OUTPUT = 4000


class NodeFailedError(Exception):
    def __init__(self, node_id: str, attempts: int, error: str) -> None:
        self.node_id, self.attempts, self.error = node_id, attempts, error
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"node '{node_id}' failed{tries}: {error}")


class ApprovalRejectedError(Exception):
    def __init__(self, node_id: str, comment: str | None) -> None:
        self.node_id, self.comment = node_id, comment
        super().__init__(f"approval '{node_id}' was rejected" + (f": {comment}" if comment else ""))


def compile_workflow(workflow: Workflow, graph: Graph, checkpointer: Any) -> Any:
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(RunState, context_schema=RunContext)
    for node_id, node in workflow.spec.nodes.items():
        if isinstance(node, MapNode):
            builder.add_node(node_id, _map_launcher(node_id, node))
        elif isinstance(node, ApprovalNode):
            builder.add_node(node_id, _approval(node_id, node))
        else:
            builder.add_node(node_id, _work(node_id))
    builder.add_node(SCHEDULER, _schedule)
    builder.add_node(BRANCH, _branch)  # type: ignore[arg-type]  # a Send target takes its payload, not the state
    builder.add_conditional_edges(START, _started)
    return builder.compile(checkpointer=checkpointer)


def initial_state(graph: Graph, inputs: dict[str, Any]) -> RunState:
    roots = plan(graph, {}, {})
    return {
        "inputs": inputs,
        "results": {},
        "status": dict.fromkeys(roots.start, "running"),
        "selected": {},
        "iterations": {},
        "parts": {},
        "map_sizes": {},
        "usage": {},
    }


def _started(state: RunState) -> list[str]:
    return [node_id for node_id, status in state["status"].items() if status == "running"]


# -- running one node -----------------------------------------------------------


def _iteration(ctx: RunContext, state: RunState, node_id: str) -> int:
    counts = state.get("iterations", {})
    return sum(counts.get(loop, 0) for loop, body in ctx.graph.loop_bodies.items() if node_id in body)


def short_output(value: Any) -> Any:
    """A node's output as events carry it: texts cut at MAX_EVENT_OUTPUT characters."""
    text = value if isinstance(value, str) else None
    if text is not None and len(text) > MAX_EVENT_OUTPUT:
        return text[:MAX_EVENT_OUTPUT] + "…"
    return value


async def execute_node(
    ctx: RunContext,
    node_id: str,
    node: Any,
    scope: dict[str, Any],
    *,
    iteration: int = 0,
    item_index: int | None = None,
) -> tuple[Outcome, dict[str, float]]:
    """Run a node's executor with its retry policy and per-attempt timeout (a remote node times each call)."""
    variant = chosen(ctx.workflow, ctx.run_id, node_id, ctx.variants)
    node = apply(node, variant)
    variant_name = variant.name if variant is not None else None
    defaults = ctx.workflow.spec.defaults
    retry = node.retry or defaults.retry
    attempts = retry.attempts if retry else 1
    delay = parse_duration(retry.delay) if retry else 0.0
    timeout_setting = node.timeout or defaults.timeout
    timeout = parse_duration(timeout_setting) if timeout_setting is not None else None
    if node.type == "remote":
        # Its executor applies `timeout` to each agent call, so that a silent agent is passed over for the
        # next one; timing the whole attempt here would fail the node before the fallback is tried.
        timeout = None
    executor = EXECUTORS[node.type]
    usage = {"steps": 0, "tokens": 0, "usd": 0.0}
    error = ""
    fatal: Exception | None = None
    for attempt in range(1, attempts + 1):
        ctx.meter.take_step()
        usage["steps"] += 1
        if node.type in EFFECTFUL:
            await ctx.services.flush()
        started, clock = time.time(), time.perf_counter()
        ctx.emit(
            NodeStarted(
                run_id=ctx.run_id,
                node_id=node_id,
                node_type=node.type,
                attempt=attempt,
                iteration=iteration,
                item_index=item_index,
                inputs=ctx.redact(node_inputs(node, scope, item_index)),
                at=started,
                variant=variant_name,
            )
        )
        try:
            async with asyncio.timeout(timeout):
                outcome = await attempting(Attempt(attempt, iteration, item_index), executor(node, scope, ctx, node_id))
        except (BudgetExceededError, NodeConfigError, MissingSecret) as exc:
            # Retrying cannot help: the budget, the configuration or the environment must change.
            error, fatal = str(exc), exc
        except TimeoutError as exc:
            if timeout is None:  # not the attempt's limit: something inside the node timed out
                error = ctx.redact(f"TimeoutError: {exc or 'an operation inside the node timed out'}")
            else:
                error = f"timed out after {timeout:g}s (the per-attempt `timeout`; raise it if the node needs longer)"
        except Exception as exc:
            error = ctx.redact(f"{type(exc).__name__}: {exc}")
        else:
            usage["steps"] += outcome.steps
            usage["tokens"] += outcome.tokens
            usage["usd"] += outcome.cost_usd
            ctx.emit(
                NodeFinished(
                    run_id=ctx.run_id,
                    node_id=node_id,
                    node_type=node.type,
                    status="succeeded",
                    attempt=attempt,
                    iteration=iteration,
                    item_index=item_index,
                    started_at=started,
                    latency_ms=(time.perf_counter() - clock) * 1000,
                    tokens=outcome.tokens,
                    cost_usd=outcome.cost_usd,
                    model=outcome.model,
                    output=short_output(outcome.value),
                    variant=variant_name,
                )
            )
            return outcome, usage
        ctx.emit(
            NodeFinished(
                run_id=ctx.run_id,
                node_id=node_id,
                node_type=node.type,
                status="failed",
                attempt=attempt,
                iteration=iteration,
                item_index=item_index,
                started_at=started,
                latency_ms=(time.perf_counter() - clock) * 1000,
                error=error,
                variant=variant_name,
            )
        )
        if fatal is not None:
            raise fatal
        if attempt < attempts and retry is not None:
            await asyncio.sleep(delay)
            delay *= retry.backoff
    raise NodeFailedError(node_id, attempts, error)


# -- what starts next -------------------------------------------------------------


def advance(
    ctx: RunContext,
    state: RunState,
    finished: dict[str, Any],
    update: dict[str, Any] | None = None,
    *,
    rescheduling: bool = True,
) -> Command[Any]:
    """Record finished nodes, continue loops, and start whatever became ready."""
    update = dict(update or {})
    spec_nodes = ctx.workflow.spec.nodes
    status = dict(update.pop("status", {}))
    results = dict(finished)
    selected: dict[str, str | None] = {}
    iterations: dict[str, int] = {}
    goto: list[Any] = []
    scope = {**scope_of(state), **finished}
    for node_id, value in finished.items():
        status[node_id] = "done"
        if spec_nodes[node_id].type == "switch":
            selected[node_id] = value
        loop = spec_nodes[node_id].loop
        if loop is None:
            continue
        count = state.get("iterations", {}).get(node_id, 0) + 1
        iterations[node_id] = count
        if count < loop.max and not truthy(evaluate(loop.until, scope)):
            body = ctx.graph.loop_bodies[node_id]
            status.update(dict.fromkeys(body, "pending"))
            iterations.update({inner: 0 for inner in ctx.graph.loop_bodies if inner != node_id and inner in body})
            status[loop.back_to] = "running"
            goto.append(loop.back_to)
    merged_status = {**state.get("status", {}), **status}
    merged_selected = {**state.get("selected", {}), **selected}
    # Only dependents of what just finished can have become ready (a scheduler pass looks at all).
    candidates = None if not rescheduling else {dep for node_id in finished for dep in ctx.graph.succs[node_id]}
    decided = plan(ctx.graph, merged_status, merged_selected, frozenset(finished), candidates=candidates)
    for node_id in decided.start:
        status[node_id] = "running"
        goto.append(node_id)
    for node_id in decided.skip:
        status[node_id] = "skipped"
        results[node_id] = None
        ctx.emit(NodeFinished(run_id=ctx.run_id, node_id=node_id, node_type=spec_nodes[node_id].type, status="skipped"))
    if decided.undecided and rescheduling:
        goto.append(SCHEDULER)
    update.update(status=status, results=results, selected=selected, iterations=iterations)
    return Command(update=update, goto=goto)


def _work(node_id: str) -> Any:
    async def run(state: RunState, runtime: Runtime[RunContext]) -> Command[Any]:
        ctx = runtime.context
        node = ctx.workflow.spec.nodes[node_id]
        if node_id in ctx.pinned:  # answered with the run's pin: nothing executes (engine/pins.py)
            pinned = answer(ctx, node_id, node.type, iteration=_iteration(ctx, state, node_id))
            return advance(ctx, state, {node_id: pinned})
        outcome, usage = await execute_node(
            ctx, node_id, node, scope_of(state), iteration=_iteration(ctx, state, node_id)
        )
        return advance(ctx, state, {node_id: outcome.value}, {"usage": usage})

    run.__name__ = node_id
    return run


def _map_launcher(node_id: str, node: MapNode) -> Any:
    async def launch(state: RunState, runtime: Runtime[RunContext]) -> Command[Any]:
        ctx = runtime.context
        if node_id in ctx.pinned:  # the whole map answered with its pin: no branch runs
            pinned = answer(ctx, node_id, "map", iteration=_iteration(ctx, state, node_id))
            return advance(ctx, state, {node_id: pinned})
        scope = scope_of(state)
        items = evaluate(node.over, scope)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise NodeFailedError(
                node_id, 1, f"`over: {node.over}` gave {type(items).__name__}, not a list; point it at an array"
            )
        ctx.emit(
            NodeStarted(run_id=ctx.run_id, node_id=node_id, node_type="map", iteration=_iteration(ctx, state, node_id))
        )
        if not items:
            return advance(ctx, state, {node_id: []})
        sends = [
            Send(BRANCH, {"map": node_id, "index": index, "item": item, "scope": scope})
            for index, item in enumerate(items)
        ]
        return Command(update={"map_sizes": {node_id: [len(items), time.time()]}}, goto=sends)

    launch.__name__ = node_id
    return launch


async def _branch(payload: dict[str, Any], runtime: Runtime[RunContext]) -> Command[Any]:
    ctx = runtime.context
    map_id, index = payload["map"], payload["index"]
    map_node = ctx.workflow.spec.nodes[map_id]
    assert isinstance(map_node, MapNode)
    scope = {**payload["scope"], "item": payload["item"], "index": index}
    async with ctx.map_limit(map_id, map_node.concurrency):
        outcome, usage = await execute_node(ctx, map_id, map_node.node, scope, item_index=index)
    return Command(update={"parts": {map_id: {str(index): outcome.value}}, "usage": usage}, goto=[SCHEDULER])


async def _schedule(state: RunState, runtime: Runtime[RunContext]) -> Command[Any]:
    """Fan in finished maps, then plan over the merged state of the last superstep."""
    ctx = runtime.context
    finished: dict[str, Any] = {}
    for map_id, parts in state.get("parts", {}).items():
        count, started = state["map_sizes"][map_id]
        size = int(count)
        if len(parts) == size:
            finished[map_id] = [parts[str(index)] for index in range(size)]
            ctx.emit(
                NodeFinished(
                    run_id=ctx.run_id,
                    node_id=map_id,
                    node_type="map",
                    status="succeeded",
                    started_at=started,
                    latency_ms=(time.time() - started) * 1000,
                    iteration=_iteration(ctx, state, map_id),
                )
            )
    # A scheduler never needs another scheduler pass: it sees every finished node.
    return advance(ctx, state, finished, {"parts": dict.fromkeys(finished)}, rescheduling=False)


def _approval(node_id: str, node: ApprovalNode) -> Any:
    async def approve(state: RunState, runtime: Runtime[RunContext]) -> Command[Any]:
        ctx = runtime.context
        message = render(node.message, scope_of(state))
        message = message if isinstance(message, str) else str(message)
        # Runs again from here on resume: nothing above this line may have effects.
        decision = interrupt({"node_id": node_id, "message": message})
        if decision.get("message") not in (None, message):
            raise NodeFailedError(
                node_id, 1, "the approval no longer matches what was shown; the run state changed after the request"
            )
        approved = bool(decision.get("approved"))
        comment = decision.get("comment")
        ctx.emit(ApprovalDecided(run_id=ctx.run_id, node_id=node_id, approved=approved, comment=comment))
        ctx.emit(
            NodeFinished(
                run_id=ctx.run_id,
                node_id=node_id,
                node_type="approval",
                started_at=time.time(),
                status="succeeded" if approved else "failed",
                iteration=_iteration(ctx, state, node_id),
                error=None if approved else "rejected",
            )
        )
        if not approved:
            raise ApprovalRejectedError(node_id, comment)
        return advance(ctx, state, {node_id: {"approved": True, "comment": comment}})

    approve.__name__ = node_id
    return approve
