"""Time travel: fork a new run from the state another run had just before one of its nodes ran.

Every step of a run is checkpointed on its LangGraph thread (the run id). `plan_replay` walks the
source run's history for the last checkpoint where NODE was about to run (pending in `next`, status
`running`, no result yet), applies the `--set` edits to that state, resets its usage and measures what
the fork reuses: every model and tool call the source made before that checkpoint (and, for a replay of
a replay, what the source itself had reused). `replay` queues a new run of the same version with that
state in `overrides["replay"]`; `Engine.execute` starts it there instead of at the workflow's roots, so
nothing upstream runs again. The CLI (`agentflow replay`, cli_replay.py), the API and the run console
call `replay`.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

from agentflow.engine.inputs import InputError, parse_pairs, prepare_inputs
from agentflow.spec.graph import Graph
from agentflow.store.base import RunRecord

if TYPE_CHECKING:
    from agentflow.engine.runner import Compiled
    from agentflow.runtime import AgentFlow

BUSY_STATUSES = ("queued", "running")
TRIGGER = "replay"


class ReplayError(ValueError):
    """A replay that cannot be made as asked; the message says what can be done instead."""


class ReplayConflict(ReplayError):
    """The source run's state does not allow a replay now (it is still queued or running)."""


@dataclass(frozen=True, slots=True)
class Reused:
    """What a fork takes from its source instead of paying for it again."""

    nodes: tuple[str, ...]
    calls: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "calls": self.calls,
            "tool_calls": self.tool_calls,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 10),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Reused:
        data = data or {}
        return cls(
            tuple(data.get("nodes") or ()),
            int(data.get("calls") or 0),
            int(data.get("tool_calls") or 0),
            int(data.get("tokens") or 0),
            float(data.get("cost_usd") or 0.0),
        )

    def line(self, node_id: str) -> str:
        """'replayed from c: reused 2 node results (2 model calls, 1,234 tokens, $0.0031 not spent again)'."""
        count = len(self.nodes)
        spent = [_plural(self.calls, "model call")]
        if self.tool_calls:
            spent.append(_plural(self.tool_calls, "tool call"))
        spent += [f"{self.tokens:,} tokens", f"{usd(self.cost_usd)} not spent again"]
        return f"replayed from {node_id}: reused {_plural(count, 'node result')} ({', '.join(spent)})"


@dataclass(frozen=True, slots=True)
class Fork:
    """A replay ready to queue: the source, the node it starts at, the edited state and what it reuses."""

    source: RunRecord
    node_id: str
    state: dict[str, Any]
    reused: Reused

    def overrides(self) -> dict[str, Any]:
        """The new run's `RunRecord.overrides`: what `Engine.execute` starts from; the source's pinned outputs
        and chosen variants carry over, so the nodes that run again run as they did."""
        kept = {key: value for key, value in (self.source.overrides or {}).items() if key != "replay" and value}
        replay = {
            "run_id": self.source.id,
            "node_id": self.node_id,
            "state": self.state,
            "reused": self.reused.to_dict(),
        }
        return {**kept, "replay": replay}


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`--set PATH=VALUE` words: a node's value is JSON when it parses, else text; an input stays text, to be
    coerced by its declared type as `-i` does."""
    try:
        raw = parse_pairs(pairs, example="--set inputs.ticket='my printer is on fire' or --set classify.category=bug")
    except InputError as exc:
        raise ReplayError(f"--set {exc}") from None
    return {path: value if path.startswith("inputs.") else _json_or_text(value) for path, value in raw.items()}


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


async def replay(
    flow: AgentFlow, source: RunRecord, node_id: str, edits: Mapping[str, Any] | None = None
) -> tuple[RunRecord, Fork]:
    """Queue a new run of `source`'s version from the state before `node_id`, with `edits` applied."""
    fork = await plan_replay(flow, source, node_id, edits or {})
    version = flow.store.get_workflow(source.workflow, source.version)
    assert version is not None  # plan_replay compiled it
    run = await asyncio.to_thread(
        flow.submit, version, fork.state["inputs"], trigger=TRIGGER, overrides=fork.overrides()
    )
    return run, fork


async def plan_replay(flow: AgentFlow, source: RunRecord, node_id: str, edits: Mapping[str, Any]) -> Fork:
    """The fork a replay of `source` from `node_id` would start from; ReplayError says why there is none."""
    if source.status in BUSY_STATUSES:
        short = source.id[:12]
        raise ReplayConflict(
            f"run {source.id} is still {source.status}; replay it once it has ended "
            f"(follow it with: agentflow logs -f {short}, or stop it with: agentflow cancel {short})"
        )
    try:
        compiled = await asyncio.to_thread(flow.engine.compiled, source.workflow, source.version)
    except LookupError:
        raise ReplayError(
            f"version {source.version} of workflow '{source.workflow}' is no longer stored; run {source.id} "
            "cannot be replayed"
        ) from None
    nodes = compiled.workflow.spec.nodes
    if node_id not in nodes:
        raise ReplayError(f"--from {node_id}: {_unknown(node_id, list(nodes), source.workflow)}")
    history = await _history(flow, compiled, source.id)
    before = next((snapshot for snapshot in history if _about_to_run(snapshot, node_id)), None)
    if before is None:
        raise ReplayError(_not_reached(source, node_id, history))
    state = copy.deepcopy(dict(before.values))
    _apply_edits(compiled, state, node_id, edits)
    state["usage"] = {}  # the new run pays only for what it runs
    reused = await asyncio.to_thread(_reused, flow, source, compiled.graph, state, _timestamp(before.created_at))
    return Fork(source, node_id, state, reused)


# -- the source run's history ---------------------------------------------------------


async def _history(flow: AgentFlow, compiled: Compiled, run_id: str) -> list[Any]:
    """The run's checkpoints, newest first; its thread is loaded for this only, then forgotten again."""
    saver = flow.engine.saver
    loaded = run_id in saver.storage
    await asyncio.to_thread(saver.preload, run_id)  # the checkpoint rows, read off the event loop
    try:
        config = {"configurable": {"thread_id": run_id}}
        return [snapshot async for snapshot in compiled.app.aget_state_history(config)]
    finally:
        if not loaded:
            saver.evict(run_id)


def _about_to_run(snapshot: Any, node_id: str) -> bool:
    values = snapshot.values or {}
    return (
        node_id in snapshot.next
        and values.get("status", {}).get(node_id) == "running"
        and node_id not in values.get("results", {})
    )


def _not_reached(source: RunRecord, node_id: str, history: list[Any]) -> str:
    replayed = (source.overrides or {}).get("replay") or {}
    if node_id in (replayed.get("reused") or {}).get("nodes", ()):
        origin = replayed.get("run_id", "")
        return (
            f"node '{node_id}' did not run in run {source.id}: this replay reused its result from run {origin}; "
            f"replay that run instead: agentflow replay {origin[:12]} --from {node_id}"
        )
    if not history:
        return f"run {source.id} has no checkpoints to fork from (it never started, or its data was removed)"
    final = history[0].values or {}
    status = final.get("status", {})
    if status.get(node_id) == "skipped":
        return f"node '{node_id}' was skipped in run {source.id} (its branch was not taken), so it never ran"
    reached = [node for node in status if status[node] != "skipped" and _ran(history, node)]
    listed = ", ".join(reached) or "none"
    return (
        f"node '{node_id}' was never reached in run {source.id} (it ended {source.status} before it); "
        f"nodes it reached, which it can be replayed from: {listed}"
    )


def _ran(history: list[Any], node_id: str) -> bool:
    return any(_about_to_run(snapshot, node_id) for snapshot in history)


def _timestamp(created_at: str | None) -> float:
    return datetime.fromisoformat(created_at).timestamp() if created_at else float("inf")


# -- edits ----------------------------------------------------------------------------


def _apply_edits(compiled: Compiled, state: dict[str, Any], node_id: str, edits: Mapping[str, Any]) -> None:
    """Apply `--set` edits to the forked state; inputs are checked against the workflow's input schema."""
    workflow, graph = compiled.workflow, compiled.graph
    editable = editable_nodes(graph, state, node_id)
    inputs = dict(state.get("inputs", {}))
    results = dict(state.get("results", {}))
    for path, value in edits.items():
        head, _, rest = path.partition(".")
        if head == "inputs":
            if not rest:
                raise ReplayError(f"--set {path}: name the input, e.g. --set inputs.NAME=VALUE")
            _assign(inputs, "inputs", rest.split("."), value, path)
        elif head in workflow.spec.nodes:
            if head not in editable:
                raise ReplayError(f"--set {path}: {_why_not(graph, state, node_id, head, editable)}")
            results[head] = _assign_value(results.get(head), rest.split(".") if rest else [], value, path)
        else:
            raise ReplayError(f"--set {path}: {_unknown(head, ['inputs', *workflow.spec.nodes], workflow.name)}")
    try:
        state["inputs"] = prepare_inputs(workflow, inputs)
    except InputError as exc:
        raise ReplayError(f"--set: the edited inputs are invalid: {exc}") from None
    state["results"] = results


def editable_nodes(graph: Graph, state: Mapping[str, Any], node_id: str) -> list[str]:
    """The nodes whose results a replay from `node_id` may edit: those upstream of it that ran."""
    upstream = ancestors(graph, node_id)
    status = state.get("status", {})
    return [node for node in graph.order if node in upstream and status.get(node) == "done"]


def ancestors(graph: Graph, node_id: str) -> set[str]:
    found: set[str] = set()
    pending = list(graph.preds[node_id])
    while pending:
        node = pending.pop()
        if node not in found:
            found.add(node)
            pending.extend(graph.preds[node])
    return found - {node_id}


def _why_not(graph: Graph, state: Mapping[str, Any], node_id: str, target: str, editable: list[str]) -> str:
    allowed = f"what can be edited: inputs.NAME and {', '.join(editable)}" if editable else "only inputs.NAME"
    if target == node_id:
        why = f"'{target}' is the node the replay starts at: it runs again and makes its own result"
    elif target in _descendants(graph, node_id):
        why = f"'{target}' is downstream of '{node_id}': it runs again in the replay"
    elif target in ancestors(graph, node_id):
        why = f"'{target}' did not run before '{node_id}' ({state.get('status', {}).get(target, 'not reached')})"
    else:
        why = f"'{target}' is not upstream of '{node_id}', so its result does not reach it"
    return f"{why}; {allowed}"


def _descendants(graph: Graph, node_id: str) -> set[str]:
    found: set[str] = set()
    pending = list(graph.succs[node_id])
    while pending:
        node = pending.pop()
        if node not in found:
            found.add(node)
            pending.extend(graph.succs[node])
    return found


def _assign_value(current: Any, keys: list[str], value: Any, path: str) -> Any:
    if not keys:
        return value
    if not isinstance(current, dict):
        kind = "nothing" if current is None else type(current).__name__
        head = path.partition(".")[0]
        raise ReplayError(
            f"--set {path}: the result of '{head}' is {kind}, not an object with fields; "
            f"set the whole result with --set {head}=VALUE"
        )
    updated = copy.deepcopy(current)
    _assign(updated, path.partition(".")[0], keys, value, path)
    return updated


def _assign(container: dict[str, Any], base: str, keys: list[str], value: Any, path: str) -> None:
    """Set `value` at `keys` inside `container` (named `base`), every key but the last naming an object."""
    where = container
    for depth, key in enumerate(keys[:-1]):
        inner = where.get(key)
        if not isinstance(inner, dict):
            prefix = ".".join([base, *keys[: depth + 1]])
            raise ReplayError(f"--set {path}: {prefix} is not an object; set it whole with --set {prefix}=VALUE")
        where = inner
    where[keys[-1]] = value


def _unknown(name: str, known: list[str], workflow: str) -> str:
    close = get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"its nodes: {', '.join(known)}"
    return f"'{name}' is not a node of workflow '{workflow}'; {hint}"


# -- what the fork reuses ------------------------------------------------------------


def _reused(flow: AgentFlow, source: RunRecord, graph: Graph, state: dict[str, Any], until: float) -> Reused:
    """The calls the source made before the fork point, plus what the source had itself reused."""
    earlier = Reused.from_dict(((source.overrides or {}).get("replay") or {}).get("reused"))
    calls, tool_calls, tokens, cost = earlier.calls, earlier.tool_calls, earlier.tokens, earlier.cost_usd
    for event in flow.store.events(source.id):
        if event.get("at", 0) >= until:
            continue  # made at or after the fork point: the replay makes it again
        if event.get("type") == "llm_call":
            calls += 1
            tokens += int(event.get("input_tokens") or 0) + int(event.get("output_tokens") or 0)
            cost += float(event.get("cost_usd") or 0.0)
        elif event.get("type") == "tool_call":
            tool_calls += 1
    status = state.get("status", {})
    done = tuple(node for node in graph.order if status.get(node) == "done")
    return Reused(done, calls, tool_calls, tokens, cost)


def usd(amount: float) -> str:
    """$0.0031; amounts under a tenth of a cent keep their first digits ($0.00004) instead of showing $0.0000."""
    if amount == 0 or amount >= 0.001:
        return f"${amount:.4f}"
    return "$" + f"{amount:.8f}".rstrip("0")


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
