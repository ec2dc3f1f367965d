"""`agentflow deploy`, `rollback`, `undeploy`, `deployments`, `triggers list`, `hooks secret` and `deliveries`:
which version the world starts, and what the world sent.

Like `agentflow grant`, these work on this machine's store; who acts is `cli_grants.person()`. A webhook
secret is printed once, when it is made (at deploy or rotation): the store keeps it to check signatures,
and nothing shows it again. `live_triggers`, `hook_url` and `fire_time` also serve the Workflows tab.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings
    from agentflow.store.base import Delivery, Deployment
    from agentflow.triggers.deployments import DeployResult, TriggerInfo

COMMANDS = frozenset({"deploy", "rollback", "undeploy", "deployments", "triggers", "hooks", "deliveries"})
MAX_DELIVERIES = 1000
RECENT_DELIVERIES = 200
"""How far back `triggers list` looks for each trigger's last delivery."""


class TriggerUsageError(Exception):
    """A deploy or trigger command that cannot be done as asked (the CLI prints it, exit code 2)."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = commands.add_parser("deploy", help="make a version the one its triggers (webhooks, schedules, chat) fire")
    deploy.add_argument("workflow", metavar="WORKFLOW", help="the workflow's name (metadata.name)")
    deploy.add_argument("--version", help="a version: v2, or its id (or a prefix of it); the current one when omitted")
    deploy.add_argument("--note", help="why, recorded with the deployment")
    deploy.add_argument("--json", action="store_true")

    rollback = commands.add_parser("rollback", help="deploy again the version deployed before the current one")
    rollback.add_argument("workflow", metavar="WORKFLOW")
    rollback.add_argument("--json", action="store_true")

    undeploy = commands.add_parser("undeploy", help="stop every trigger of a workflow")
    undeploy.add_argument("workflow", metavar="WORKFLOW")
    undeploy.add_argument("--json", action="store_true")

    history = commands.add_parser("deployments", help="a workflow's deployment history: when, who, which version")
    history.add_argument("workflow", metavar="WORKFLOW")
    history.add_argument("--json", action="store_true")

    triggers = commands.add_parser("triggers", help="the triggers of deployed workflows")
    triggers_commands = triggers.add_subparsers(dest="triggers_command", required=True, metavar="list")
    listing = triggers_commands.add_parser("list", help="every live trigger, its next fire and last delivery")
    listing.add_argument("workflow", metavar="WORKFLOW", nargs="?", help="only this workflow's")
    listing.add_argument("--json", action="store_true")

    hooks = commands.add_parser("hooks", help="webhook signing secrets")
    hooks_commands = hooks.add_subparsers(dest="hooks_command", required=True, metavar="secret")
    secret = hooks_commands.add_parser("secret", help="make a new signing secret for a webhook trigger (--rotate)")
    secret.add_argument("workflow", metavar="WORKFLOW")
    secret.add_argument("--trigger", help="which webhook trigger, when the workflow has several")
    secret.add_argument("--rotate", action="store_true", help="make a new secret; the old one stays valid 24 h")
    secret.add_argument("--json", action="store_true")

    deliveries = commands.add_parser("deliveries", help="what the world sent a workflow: accepted, duplicate, refused")
    deliveries.add_argument("workflow", metavar="WORKFLOW")
    deliveries.add_argument("--limit", type=int, default=20, help="how many, newest first (default 20)")
    deliveries.add_argument("--json", action="store_true")


def run(flow: AgentFlow, args: argparse.Namespace) -> int:
    """Carry out one of COMMANDS; the refusals of deployments (a grant missing...) become TriggerUsageError."""
    from agentflow.spec.errors import SpecErrors
    from agentflow.triggers.deployments import DeployError
    from agentflow.trust.grants import NeedsGrantError

    command = {
        "deploy": deploy,
        "rollback": rollback,
        "undeploy": undeploy,
        "deployments": deployments,
        "triggers": triggers,
        "hooks": hook_secret,
        "deliveries": deliveries,
    }[args.command]
    try:
        return command(flow, args)
    except (DeployError, NeedsGrantError) as exc:  # their messages say what to do
        raise TriggerUsageError(str(exc)) from None
    except SpecErrors as exc:  # a version stored before a rule it breaks existed
        raise TriggerUsageError(
            f"'{args.workflow}' cannot be deployed: this version no longer validates here ({exc.errors[0].message})"
        ) from None


# -- what the CLI and the Workflows tab show ------------------------------------------------


def public_base(settings: Settings) -> str:
    """Where the world reaches this server: AGENTFLOW_PUBLIC_URL, else the address it listens on."""
    return settings.public_url or f"http://{settings.host}:{settings.port}"


def hook_url(settings: Settings, path: str | None) -> str | None:
    return public_base(settings) + path if path else None


def fire_time(timestamp: float | None, zone: str) -> str:
    """`2026-12-07 09:00 CET (Europe/Paris)`: a schedule's time as its cron reads it."""
    if timestamp is None:
        return "nothing left to fire"
    moment = datetime.fromtimestamp(timestamp, ZoneInfo(zone))
    shown = moment.strftime("%Y-%m-%d %H:%M %Z")
    return shown if moment.tzname() == zone else f"{shown} ({zone})"


def local_time(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "—"


@dataclass(frozen=True, slots=True)
class LiveTrigger:
    """A deployed trigger with what people need beside it: its URL, its schedule's zone, its last delivery."""

    info: TriggerInfo
    url: str | None
    timezone: str | None
    last: Delivery | None

    @property
    def next_fire(self) -> str | None:
        return fire_time(self.info.next_fire_at, self.timezone) if self.timezone is not None else None

    def fires_on(self) -> str:
        """What fires it, in a few words: the URL to POST to, the cron and next time, the chat command."""
        if self.url is not None:
            return f"POST {self.url}"
        if self.next_fire is not None:
            return f"{self.info.detail}; next {self.next_fire}"
        return self.info.detail

    def to_json(self) -> dict[str, Any]:
        found = asdict(self.info)
        next_at = self.info.next_fire_at
        found.update(
            url=self.url,
            timezone=self.timezone,
            next_fire=(
                datetime.fromtimestamp(next_at, ZoneInfo(self.timezone)).isoformat()
                if next_at is not None and self.timezone is not None
                else None
            ),
            last_delivery=asdict(self.last) if self.last is not None else None,
        )
        return found


def live_triggers(flow: AgentFlow, name: str | None = None) -> list[LiveTrigger]:
    """The triggers of one deployed workflow (of every one when `name` is None), in declaration order."""
    infos = flow.deployments.triggers(name)
    zones = {(item.workflow, item.trigger): item.timezone for item in flow.store.schedules(name)}
    last: dict[tuple[str, str], Delivery] = {}
    for workflow in sorted({info.workflow for info in infos}):
        for delivery in flow.store.deliveries(workflow, limit=RECENT_DELIVERIES):  # newest first
            last.setdefault((delivery.workflow, delivery.trigger), delivery)
    return [
        LiveTrigger(
            info,
            hook_url(flow.settings, info.path),
            zones.get((info.workflow, info.name)),
            last.get((info.workflow, info.name)),
        )
        for info in infos
    ]


def version_label(flow: AgentFlow, workflow: str, version: str | None) -> str:
    """`v2` for a stored version's id; the id itself if it is not stored; a dash for none (undeployed)."""
    from agentflow import versions

    if version is None:
        return "—"
    stored = flow.store.get_workflow(workflow, version)
    return versions.label(stored) if stored is not None else version


# -- the commands ------------------------------------------------------------------------


def _known(flow: AgentFlow, name: str) -> None:
    if not flow.store.list_versions(name):
        raise TriggerUsageError(f"no workflow named '{name}'; save one with `agentflow run FILE` or in the app")


def _deployment_json(flow: AgentFlow, deployment: Deployment) -> dict[str, Any]:
    found = asdict(deployment)
    found["label"] = version_label(flow, deployment.workflow, deployment.version)
    return found


def deploy(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.cli_grants import person

    _known(flow, args.workflow)
    result = flow.deployments.deploy(args.workflow, args.version, by=person(), note=args.note)
    return _report(flow, result, args.json)


def rollback(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.cli_grants import person

    _known(flow, args.workflow)
    return _report(flow, flow.deployments.rollback(args.workflow, by=person()), args.json)


def _report(flow: AgentFlow, result: DeployResult, as_json: bool) -> int:
    """What is live now, and the new secrets: the one time they are printed."""
    name = result.stored.name
    live = live_triggers(flow, name)
    if as_json:
        print(
            json.dumps(
                {
                    **_deployment_json(flow, result.deployment),
                    "previous": _deployment_json(flow, result.previous) if result.previous is not None else None,
                    "triggers": [trigger.to_json() for trigger in live],
                    "secrets": result.secrets,
                }
            )
        )
        return 0
    before = ""
    if result.previous is not None and result.previous.version != result.stored.version:
        before = f" (was {version_label(flow, name, result.previous.version)})"
    verb = "rolled back to" if result.deployment.action == "rollback" else "deployed"
    print(f"{verb} {_title(flow, name, result.stored.version)}{before} by {result.deployment.deployed_by}")
    if live:
        print("live triggers:")
        _print_triggers(live, with_workflow=False)
    else:
        print(f"it declares no triggers: nothing starts '{name}' from the world (add `triggers:` to the workflow)")
    if result.secrets:
        print("new webhook signing secrets, shown only this once: give them to the sender now")
        for trigger, secret in result.secrets.items():
            print(f"  {trigger}  {secret}")
        which = next(iter(result.secrets)) if len(result.secrets) == 1 else "TRIGGER"
        print(f"lost one? `agentflow hooks secret {name} --trigger {which} --rotate` makes a new one")
    return 0


def _title(flow: AgentFlow, name: str, version: str) -> str:
    return f"'{name}' {version_label(flow, name, version)}"


def _print_triggers(live: list[LiveTrigger], *, with_workflow: bool) -> None:
    for trigger in live:
        info = trigger.info
        owner = f"{info.workflow} {info.version_label} · " if with_workflow else "  "
        print(f"{owner}{info.name} ({info.kind}): {info.detail}")
        if trigger.url is not None:
            print(f"    url   {trigger.url}")
        if trigger.next_fire is not None:
            print(f"    next  {trigger.next_fire}")
        if with_workflow:
            print(f"    last  {_delivery_line(trigger.last) if trigger.last is not None else 'no delivery yet'}")


def _delivery_line(delivery: Delivery) -> str:
    run = f" run {delivery.run_id[:12]}" if delivery.run_id else ""
    why = f" — {delivery.detail}" if delivery.detail else ""
    return f"{delivery.outcome} {local_time(delivery.at)}{run}{why}"


def undeploy(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.cli_grants import person

    _known(flow, args.workflow)
    before = flow.store.current_deployment(args.workflow)
    deployment = flow.deployments.undeploy(args.workflow, by=person())
    if args.json:
        print(json.dumps(_deployment_json(flow, deployment)))
        return 0
    was = f" (was {version_label(flow, args.workflow, before.version)})" if before is not None else ""
    print(
        f"undeployed '{args.workflow}'{was} by {deployment.deployed_by}: none of its triggers fire now; "
        f"`agentflow deploy {args.workflow}` puts it back"
    )
    return 0


def deployments(flow: AgentFlow, args: argparse.Namespace) -> int:
    _known(flow, args.workflow)
    history = flow.store.deployment_history(args.workflow)
    if args.json:
        print(json.dumps([_deployment_json(flow, deployment) for deployment in history]))
        return 0
    if not history:
        print(f"'{args.workflow}' was never deployed; `agentflow deploy {args.workflow}` deploys its current version")
        return 0
    for index, deployment in enumerate(history):  # newest first: the first is in force unless it undeployed
        in_force = "  (in force)" if index == 0 and deployment.version is not None else ""
        note = f"  [{deployment.note}]" if deployment.note else ""
        label = version_label(flow, args.workflow, deployment.version)
        print(
            f"{local_time(deployment.deployed_at)}  {deployment.action:<8}  {label:<4}  "
            f"by {deployment.deployed_by}{note}{in_force}"
        )
    return 0


def triggers(flow: AgentFlow, args: argparse.Namespace) -> int:
    if args.workflow is not None:
        _known(flow, args.workflow)
    live = live_triggers(flow, args.workflow)
    if args.json:
        print(json.dumps([trigger.to_json() for trigger in live]))
        return 0
    if not live:
        if args.workflow is not None and flow.store.current_deployment(args.workflow) is None:
            print(f"'{args.workflow}' is not deployed, so nothing fires it; `agentflow deploy {args.workflow}`")
        elif args.workflow is not None:
            print(f"the deployed version of '{args.workflow}' declares no triggers")
        else:
            print("no deployed workflow has triggers; `agentflow deploy WORKFLOW` deploys one")
        return 0
    _print_triggers(live, with_workflow=True)
    return 0


def hook_secret(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.triggers.deployments import SECRET_GRACE_SECONDS

    _known(flow, args.workflow)
    grace = f"{SECRET_GRACE_SECONDS / 3600:g} h"
    if not args.rotate:
        if flow.store.current_deployment(args.workflow) is None:
            raise TriggerUsageError(
                f"workflow '{args.workflow}' is not deployed; `agentflow deploy {args.workflow}` makes and shows "
                "its webhook secrets"
            )
        which = f" --trigger {args.trigger}" if args.trigger else ""
        raise TriggerUsageError(
            "a webhook secret is shown only when it is made, at deploy or rotation; "
            f"`agentflow hooks secret {args.workflow}{which} --rotate` makes a new one "
            f"(the old one stays valid {grace})"
        )
    trigger, secret = flow.deployments.rotate_secret(args.workflow, args.trigger)
    older = flow.store.hook_secrets(args.workflow, trigger, now=time.time())[1:]
    until = max((item.retired_at for item in older if item.retired_at is not None), default=None)
    path = next(
        (info.path for info in flow.deployments.triggers(args.workflow) if info.name == trigger),
        None,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "workflow": args.workflow,
                    "trigger": trigger,
                    "secret": secret,
                    "previous_valid_until": until,
                    "url": hook_url(flow.settings, path),
                }
            )
        )
        return 0
    print(f"new signing secret of '{args.workflow}' trigger {trigger}, shown only this once:")
    print(f"  {secret}")
    if until is not None:
        print(f"the previous secret stays valid {grace}, until {local_time(until)}, while senders switch over")
    return 0


def deliveries(flow: AgentFlow, args: argparse.Namespace) -> int:
    _known(flow, args.workflow)
    if not 1 <= args.limit <= MAX_DELIVERIES:
        raise TriggerUsageError(f"--limit {args.limit}: give a number from 1 to {MAX_DELIVERIES}")
    found = flow.store.deliveries(args.workflow, limit=args.limit)
    if args.json:
        print(json.dumps([asdict(delivery) for delivery in found]))
        return 0
    if not found:
        print(f"nothing was delivered to '{args.workflow}' yet")
        return 0
    for delivery in found:
        run = f"  run {delivery.run_id[:12]}" if delivery.run_id else ""
        key = f"  key {delivery.key}" if delivery.key else ""
        why = f"  — {delivery.detail}" if delivery.detail else ""
        print(
            f"{local_time(delivery.at)}  {delivery.channel:<8}  {delivery.trigger:<12}  "
            f"{delivery.outcome:<9}{run}{key}{why}"
        )
    return 0
