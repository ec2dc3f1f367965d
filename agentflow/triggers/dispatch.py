"""From a delivery to a run: the deployed version, checked inputs, one run per idempotency key.

Webhooks, chat messages and schedules all end here (schedules through `claim_fire`). A delivery that
cannot start a run is refused with an HTTP-like status and a reason, and logged; nothing is recorded
but the log line. A delivery seen before gets the run it started the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.inputs import InputError
from agentflow.store.base import Delivery, TriggeredRun
from agentflow.trust.grants import NeedsGrantError

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.triggers.deployments import Deployed


class Refused(Exception):
    """A delivery that starts nothing: `status` as HTTP says it (403, 404, 413, 422, 429), `reason` for people."""

    def __init__(self, status: int, reason: str, *, logged: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.logged = logged  # already in the delivery log


@dataclass(frozen=True, slots=True)
class Started:
    run_id: str
    created: bool  # False: the key was seen before, and this is the run it started then
    workflow: str
    version: str


def refuse(
    flow: AgentFlow, workflow: str, trigger: str, channel: str, status: int, reason: str, key: str | None = None
) -> Refused:
    """Log a refusal (queued: it never slows the answer) and return the exception to raise."""
    flow.store.log_delivery(
        Delivery(
            workflow=workflow, trigger=trigger, channel=channel, outcome="refused", key=key, detail=f"{status} {reason}"
        )
    )
    return Refused(status, reason, logged=True)


async def start(
    flow: AgentFlow,
    deployed: Deployed,
    trigger: str,
    *,
    channel: str,
    scope: str,
    key: str,
    inputs: dict[str, Any],
    reply_to: dict[str, Any] | None = None,
    wake: bool = True,
) -> Started:
    """Record the run a delivery asks for (durable when this returns) and wake the executor; raises Refused.

    On the event loop: checking is quick (the version is compiled once, reads are indexed) and the
    commit is awaited without a thread, so concurrent deliveries share one commit. With `wake=False`
    the caller wakes the executor itself (a chat says "Started" before the run can answer)."""
    name, version = deployed.name, deployed.stored.version
    try:
        run = flow.executor.prepare(name, version, inputs, trigger=channel, reply_to=reply_to)
    except InputError as exc:
        raise refuse(flow, name, trigger, channel, 422, str(exc), key) from None
    except NeedsGrantError as exc:  # the grant was withdrawn after deploying
        raise refuse(flow, name, trigger, channel, 403, str(exc), key) from None
    except BudgetExceededError as exc:
        raise refuse(flow, name, trigger, channel, 429, str(exc), key) from None
    delivery = Delivery(workflow=name, trigger=trigger, channel=channel, outcome="accepted", key=key)
    request = TriggeredRun(run=run, scope=scope, key=key, delivery=delivery)
    [(run_id, created)] = await flow.store.astart_triggered([request])
    if created and wake:
        flow.executor.wake()
    return Started(run_id, created, name, version)
