"""Deployments: which version of a workflow its triggers fire. Never a draft; never an ungranted version.

`deploy` records who deployed which version and when (the store keeps the history; the newest
entry is in force), creates a signing secret for each webhook trigger that has none (shown once),
and (re)places the workflow's schedules. `rollback` deploys the version in force before the current
one; `undeploy` stops every trigger of the workflow. Two deployed workflows never claim the same
chat command: the second deploy is refused, naming the first.
"""

from __future__ import annotations

import base64
import secrets as random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentflow.spec.models import ChatTrigger, ScheduleTrigger, Trigger, Workflow, trigger_names
from agentflow.store.base import Deployment, Schedule, WorkflowVersion
from agentflow.triggers.schedules import next_fire
from agentflow.versions import UnknownVersionError, label, resolve, title

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

HOOK_PREFIX = "/api/hooks"
SECRET_GRACE_SECONDS = 24 * 3600.0
"""A rotated webhook secret stays valid this long, so senders can switch without losing deliveries."""
FRESH_SECONDS = 1.0
"""How long a process trusts what it read of a workflow's deployment: a deploy made by another process
reaches this one's triggers within this time (this process's own deploys, at once)."""


class DeployError(ValueError):
    """A deploy, rollback or rotation that cannot happen; the message says what to do instead."""


def new_hook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(random.token_bytes(32)).decode()


def hook_path(workflow: str, trigger: str) -> str:
    return f"{HOOK_PREFIX}/{workflow}/{trigger}"


@dataclass(frozen=True, slots=True)
class Deployed:
    """A workflow's deployment in force, with the version it runs and that version's triggers by name."""

    deployment: Deployment
    stored: WorkflowVersion
    workflow: Workflow
    triggers: dict[str, Trigger]

    @property
    def name(self) -> str:
        return self.stored.name

    def chat_triggers(self, channel: str) -> list[tuple[str, ChatTrigger]]:
        return [
            (name, trigger.config)
            for name, trigger in self.triggers.items()
            if trigger.kind == channel and isinstance(trigger.config, ChatTrigger)
        ]


@dataclass(frozen=True, slots=True)
class DeployResult:
    deployment: Deployment
    stored: WorkflowVersion
    previous: Deployment | None
    secrets: dict[str, str] = field(default_factory=dict)
    """New webhook signing secrets by trigger name: shown once, here; `agentflow hooks secret --rotate` for more."""
    schedules: list[Schedule] = field(default_factory=list)

    def summary(self) -> str:
        verb = {"deploy": "deployed", "rollback": "rolled back to"}.get(self.deployment.action, "deployed")
        before = ""
        if self.previous is not None and self.previous.version != self.stored.version:
            before = f" (was version {self.previous.version})"
        return f"{verb} {title(self.stored)}{before}"


@dataclass(frozen=True, slots=True)
class TriggerInfo:
    """A deployed trigger, for lists (CLI, API, the Workflows tab)."""

    workflow: str
    name: str
    kind: str
    version: str
    version_label: str
    detail: str
    next_fire_at: float | None = None
    path: str | None = None


class Deployments:
    def __init__(self, flow: AgentFlow, *, clock: Callable[[], float] = time.time) -> None:
        self.flow = flow
        self.store = flow.store
        self.clock = clock
        self.listeners: list[Callable[[], None]] = []
        """Called after every deploy, rollback and undeploy in this process (the scheduler wakes up)."""
        self._made: dict[int, Deployed] = {}  # by deployment id: a deployment never changes once recorded
        self._read: dict[str, tuple[float, Deployment | None]] = {}  # workflow -> (when read, what)

    # -- reading ---------------------------------------------------------------------

    def deployed(self, name: str) -> Deployed | None:
        now = time.monotonic()
        read = self._read.get(name)
        if read is not None and now - read[0] < FRESH_SECONDS:
            deployment = read[1]
        else:
            deployment = self.store.current_deployment(name)
            if len(self._read) > 10_000:
                self._read.clear()
            self._read[name] = (now, deployment)
        return self._deployed(deployment) if deployment is not None else None

    def all_deployed(self) -> list[Deployed]:
        return [self._deployed(deployment) for deployment in self.store.deployments()]

    def _deployed(self, deployment: Deployment) -> Deployed:
        made = self._made.get(deployment.id)
        if made is not None and made.deployment == deployment:
            return made
        assert deployment.version is not None
        stored = self.store.get_workflow(deployment.workflow, deployment.version)
        if stored is None:  # versions are never deleted; a store restored without them is not ours to guess
            raise DeployError(f"deployed version {deployment.version} of '{deployment.workflow}' is not stored")
        workflow = self.flow.engine.compiled(stored.name, stored.version).workflow
        names = trigger_names(workflow.spec.triggers)
        made = Deployed(deployment, stored, workflow, dict(zip(names, workflow.spec.triggers, strict=True)))
        if len(self._made) > 1000:
            self._made.clear()
        self._made[deployment.id] = made
        return made

    def triggers(self, name: str | None = None) -> list[TriggerInfo]:
        found = [self.deployed(name)] if name is not None else self.all_deployed()
        schedules = {(item.workflow, item.trigger): item for item in self.store.schedules(name)}
        infos: list[TriggerInfo] = []
        for deployed in found:
            if deployed is None:
                continue
            for trigger_name, trigger in deployed.triggers.items():
                schedule = schedules.get((deployed.name, trigger_name))
                infos.append(
                    TriggerInfo(
                        workflow=deployed.name,
                        name=trigger_name,
                        kind=trigger.kind,
                        version=deployed.stored.version,
                        version_label=label(deployed.stored),
                        detail=describe(trigger),
                        next_fire_at=schedule.next_fire_at if schedule is not None else None,
                        path=hook_path(deployed.name, trigger_name) if trigger.kind == "webhook" else None,
                    )
                )
        return infos

    # -- changing --------------------------------------------------------------------

    def deploy(
        self, name: str, ref: str | None = None, *, by: str, note: str | None = None, action: str = "deploy"
    ) -> DeployResult:
        """Deploy a stored version (the current one by default); raises DeployError or NeedsGrantError."""
        try:
            stored = resolve(self.store, name, ref)
        except UnknownVersionError as exc:
            raise DeployError(str(exc)) from None
        workflow = self.flow.engine.compiled(stored.name, stored.version).workflow
        # Only what a person granted is deployed: the world must not reach more than they allowed.
        self.flow.grants.require(workflow, stored.version)
        self._check_commands(workflow)
        previous = self.store.current_deployment(name)
        deployment = self.store.record_deployment(name, stored.version, action=action, by=by, note=note)
        secrets = self._ensure_secrets(workflow)
        schedules = self._place_schedules(workflow, stored)
        self._changed()
        return DeployResult(deployment, stored, previous, secrets, schedules)

    def rollback(self, name: str, *, by: str) -> DeployResult:
        """Deploy again the version in force before the current one."""
        current = self.store.current_deployment(name)
        if current is None:
            raise DeployError(f"workflow '{name}' is not deployed; deploy it with `agentflow deploy {name}`")
        for earlier in self.store.deployment_history(name, limit=200):
            if earlier.version is not None and earlier.version != current.version:
                return self.deploy(
                    name, earlier.version, by=by, note=f"rollback from {current.version}", action="rollback"
                )
        raise DeployError(
            f"workflow '{name}' has had no other version deployed to roll back to; "
            f"deploy one with `agentflow deploy {name} --version V`"
        )

    def undeploy(self, name: str, *, by: str) -> Deployment:
        current = self.store.current_deployment(name)
        if current is None:
            raise DeployError(f"workflow '{name}' is not deployed; nothing to undeploy")
        deployment = self.store.record_deployment(name, None, action="undeploy", by=by)
        self.store.set_schedules(name, [])
        self._changed()
        return deployment

    def rotate_secret(
        self, name: str, trigger: str | None = None, *, grace: float = SECRET_GRACE_SECONDS
    ) -> tuple[str, str]:
        """A new signing secret for a webhook trigger of the deployed version: (trigger name, secret).
        The previous one keeps working for `grace` seconds."""
        deployed = self.deployed(name)
        if deployed is None:
            raise DeployError(f"workflow '{name}' is not deployed; `agentflow deploy {name}` shows its secrets")
        hooks = [key for key, item in deployed.triggers.items() if item.kind == "webhook"]
        if not hooks:
            raise DeployError(f"the deployed version of '{name}' has no webhook trigger")
        if trigger is None:
            if len(hooks) > 1:
                raise DeployError(
                    f"'{name}' has several webhook triggers ({', '.join(hooks)}); say which with --trigger"
                )
            trigger = hooks[0]
        if trigger not in hooks:
            raise DeployError(f"'{name}' has no webhook trigger '{trigger}'; its webhook triggers: {', '.join(hooks)}")
        config = deployed.triggers[trigger].webhook
        if config is not None and config.secret:
            raise DeployError(
                f"trigger '{trigger}' of '{name}' signs with the operator's secret {config.secret}: "
                "change that secret's value (data/secrets.env or AGENTFLOW_SECRET_...) to rotate it"
            )
        secret = new_hook_secret()
        self.store.add_hook_secret(name, trigger, secret, retire_others_at=self.clock() + grace)
        return trigger, secret

    def _ensure_secrets(self, workflow: Workflow) -> dict[str, str]:
        created: dict[str, str] = {}
        now = self.clock()
        for trigger_name, trigger in zip(trigger_names(workflow.spec.triggers), workflow.spec.triggers, strict=True):
            if trigger.webhook is None or trigger.webhook.secret:
                continue
            if self.store.hook_secrets(workflow.name, trigger_name, now=now):
                continue
            secret = new_hook_secret()
            self.store.add_hook_secret(workflow.name, trigger_name, secret, retire_others_at=now)
            created[trigger_name] = secret
        return created

    def _place_schedules(self, workflow: Workflow, stored: WorkflowVersion) -> list[Schedule]:
        """The version's schedules; one whose cron and zone did not change keeps its next fire time."""
        now = self.clock()
        before = {item.trigger: item for item in self.store.schedules(workflow.name)}
        placed = []
        for trigger_name, trigger in zip(trigger_names(workflow.spec.triggers), workflow.spec.triggers, strict=True):
            config = trigger.schedule
            if config is None:
                continue
            old = before.get(trigger_name)
            kept = old is not None and (old.cron, old.timezone) == (config.cron, config.timezone)
            next_at = old.next_fire_at if kept and old is not None else next_fire(config.cron, config.timezone, now)
            placed.append(
                Schedule(
                    workflow.name,
                    trigger_name,
                    stored.version,
                    config.cron,
                    config.timezone,
                    next_at,
                    old.last_fire_at if kept and old is not None else None,
                )
            )
        self.store.set_schedules(workflow.name, placed)
        return placed

    def _check_commands(self, workflow: Workflow) -> None:
        mine = {
            (trigger.kind, trigger.config.command)
            for trigger in workflow.spec.triggers
            if isinstance(trigger.config, ChatTrigger) and trigger.config.command
        }
        if not mine:
            return
        for other in self.all_deployed():
            if other.name == workflow.name:
                continue
            for channel in ("telegram", "whatsapp"):
                for _, config in other.chat_triggers(channel):
                    if (channel, config.command) in mine:
                        raise DeployError(
                            f"the {channel} command {config.command} is already served by workflow '{other.name}' "
                            f"({label(other.stored)}); undeploy it or give this workflow another command"
                        )

    def _changed(self) -> None:
        self._read.clear()
        for listener in list(self.listeners):
            listener()


def describe(trigger: Trigger) -> str:
    """One line for people: what fires the trigger."""
    config = trigger.config
    if isinstance(config, ScheduleTrigger):
        return f"cron '{config.cron}' ({config.timezone}), misfire {config.misfire}"
    if isinstance(config, ChatTrigger):
        rule = f"command {config.command}" if config.command else f"messages matching /{config.pattern}/"
        return f"{trigger.kind} {rule}"
    assert trigger.webhook is not None
    mapped = f", inputs {', '.join(trigger.webhook.inputs)} from the body" if trigger.webhook.inputs else ""
    signed = f"signed with {trigger.webhook.secret}" if trigger.webhook.secret else "signed (Standard Webhooks)"
    waits = f", waits up to {trigger.webhook.wait} for the result" if trigger.webhook.wait else ""
    return f"POST, {signed}{mapped}{waits}, at most {trigger.webhook.rate}/min"
