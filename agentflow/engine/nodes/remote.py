"""`remote`: call a registered A2A agent, chosen by name or by skill; its reply is the node's output.

The registry orders the candidates: healthy, then stale, then offline, the fastest first. Healthy ones
are called in turn while each fails in a way another may not (refused, reset, timed out, 5xx) and
`fallback` is on; a stale or offline agent is never called: the node fails at once, naming it, its state
and when it was last heard from. The node's `timeout` limits each call, so a silent agent is passed over
like a refusing one (the engine does not time the attempt as a whole). The call goes only to the agent's
own host (the registry admitted it), and the operator's rules for internal addresses still apply.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from agentflow.engine.events import RemoteUpdate
from agentflow.engine.nodes.base import NodeConfigError, Outcome, clipped
from agentflow.registry.health import HEALTHY
from agentflow.spec.expressions import render
from agentflow.spec.models import RemoteNode, parse_duration
from agentflow.trust.egress import EgressPolicy

if TYPE_CHECKING:
    from agentflow.a2a.client import A2AReply
    from agentflow.engine.context import RunContext
    from agentflow.registry import Agent, Registry

DEFAULT_TIMEOUT_S = 60.0
PASSED_OVER = "unreachable"
"""The state a `remote_update` event gives an agent that failed transiently and was passed over."""


class RemoteAgentError(Exception):
    """No agent gave a reply: the message names each one tried, or the one not tried, and why."""


async def execute(node: RemoteNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    from agentflow.a2a.client import A2ACallError  # a2a-sdk loads in ~0.6 s: only when a remote node runs

    registry = ctx.services.registry
    if registry is None:
        raise NodeConfigError(
            "remote nodes need the agent registry; run this workflow through AgentFlow (agentflow run, the app "
            "or a worker)"
        )
    wanted = target(node)
    check_grant(node, ctx)
    text = _text(node, scope)
    data = render(node.data, scope) if node.data is not None else None
    candidates = await asyncio.to_thread(registry.candidates, agent=node.agent, skill=node.skill)
    if not candidates:
        raise NodeConfigError(
            f"no registered agent {wanted}: add one by URL (agentflow agents add URL, or the Agents tab), or give "
            "the agent an enrolment token (agentflow agents token) to register itself"
        )
    timeout = _timeout(node, ctx)
    tried: list[str] = []
    for agent in candidates if node.fallback else candidates[:1]:
        if agent.state != HEALTHY:
            break  # the registry puts every healthy agent first: none is left
        try:
            reply = await _call(agent, text, data, timeout, registry, ctx, node_id)
        except A2ACallError as exc:
            if not exc.transient:
                raise RemoteAgentError(f"agent {_named(agent)}: {exc.message}") from None
            tried.append(f"agent {_named(agent)}: {exc.message}")
            _emit(ctx, node_id, agent, PASSED_OVER, exc.message)
            continue
        if reply.state == "input-required":
            question = f": {reply.text}" if reply.text else ""
            raise RemoteAgentError(
                f"agent {_named(agent)} asks for input{question}; a remote node sends one message and does not "
                "answer questions: give the agent what it needs in the node's `input` or `data`"
            )
        return Outcome(reply.data if reply.data is not None else reply.text)
    raise RemoteAgentError(_no_answer(wanted, tried, candidates, node.fallback))


def target(node: RemoteNode) -> str:
    """ "'triage-bot'" or "with skill 'translate'", for messages."""
    return f"'{node.agent}'" if node.agent is not None else f"with skill '{node.skill}'"


def check_grant(node: RemoteNode, ctx: RunContext) -> None:
    """Refuse an agent or skill outside the grant, whatever the YAML says."""
    name = ctx.workflow.name
    if node.agent is not None and node.agent not in ctx.allowed.remote_agents:
        what = f"the remote agent '{node.agent}'"
    elif node.skill is not None and node.skill not in ctx.allowed.remote_skills:
        what = f"the remote skill '{node.skill}'"
    else:
        return
    raise NodeConfigError(
        f"workflow '{name}' is not granted {what}; a person must grant a version that calls it (agentflow grant {name})"
    )


def _text(node: RemoteNode, scope: dict[str, Any]) -> str:
    """The `input` template rendered, else what the node reads (its `needs`' results, or the run's inputs)."""
    if node.input is not None:
        value = render(node.input, scope)
    elif node.needs:
        value = {name: scope.get(name) for name in node.needs}
    else:
        value = scope.get("inputs")
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _timeout(node: RemoteNode, ctx: RunContext) -> float:
    """Seconds allowed each agent call: the node's `timeout`, else the workflow's default, else 60."""
    setting = node.timeout or ctx.workflow.spec.defaults.timeout
    return parse_duration(setting) if setting is not None else DEFAULT_TIMEOUT_S


def policy_for(agent: Agent, ctx: RunContext) -> EgressPolicy:
    """The agent's own host only, granted by its registration; internal addresses as the operator opened them."""
    host = httpx.URL(agent.url).host
    return EgressPolicy(
        hosts=frozenset({f"[{host}]" if ":" in host else host}), allow_internal=ctx.egress.allow_internal
    )


async def _call(
    agent: Agent,
    text: str,
    data: dict[str, Any] | None,
    timeout: float,
    registry: Registry,
    ctx: RunContext,
    node_id: str,
) -> A2AReply:
    from agentflow.a2a.client import call_agent

    async def on_update(state: str, said: str) -> None:
        _emit(ctx, node_id, agent, state, said)

    started = time.perf_counter()
    ok = False
    try:
        reply = await call_agent(
            agent.url,
            text,
            data=data,
            timeout=timeout,
            policy=policy_for(agent, ctx),
            on_update=on_update,
        )
        ok = True
        return reply
    finally:
        latency_ms = (time.perf_counter() - started) * 1000
        await asyncio.to_thread(registry.record_call, agent.id, latency_ms, ok)


def _emit(ctx: RunContext, node_id: str, agent: Agent, state: str, text: str) -> None:
    ctx.emit(
        RemoteUpdate(
            run_id=ctx.run_id,
            node_id=node_id,
            agent=agent.name,
            agent_id=agent.id,
            url=agent.url,
            state=state,
            text=ctx.redact(clipped(text)),
        )
    )


def _named(agent: Agent) -> str:
    return f"'{agent.name}' ({agent.id}) at {agent.url}"


def _no_answer(wanted: str, tried: list[str], candidates: list[Agent], fallback: bool) -> str:
    """Why no agent answered: the ones that failed, then the first not called for its state."""
    parts = list(tried)
    idle = next((agent for agent in candidates if agent.state != HEALTHY), None)
    if idle is not None and (fallback or not tried):
        parts.append(f"agent {_named(idle)} is {idle.state}: {_last_heard(idle)}")
    reasons = "; ".join(parts)
    if tried and not fallback:
        hint = "set `fallback: true` to try other agents, or check that this one runs"
    elif idle is not None:
        hint = "check that the agent runs and heartbeats (agentflow agents list shows every agent's state)"
    else:
        hint = "check that the agents run (agentflow agents list shows every agent's state)"
    return f"no agent {wanted} answered: {reasons}; {hint}"


def _last_heard(agent: Agent) -> str:
    if agent.last_seen is None:
        return "never heard from since it was registered"
    when = datetime.fromtimestamp(agent.last_seen, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"last heard from at {when}"
