"""`agentflow grant`, `agentflow grants` and `agentflow secrets`: a person's side of the trust boundary."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.store.base import WorkflowVersion


class GrantUsageError(Exception):
    """A mistake in the grant commands' arguments (the CLI prints it, exit code 2)."""


def person() -> str:
    """Who acts from this terminal: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "cli:unknown"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    grant = commands.add_parser("grant", help="grant a workflow version what it needs (tools, egress, secrets)")
    grant.add_argument("workflow", metavar="WORKFLOW", help="the workflow's name (metadata.name)")
    grant.add_argument("--version", help="a version: v2, or its id (or a prefix of it); the current one when omitted")
    grant.add_argument("--yes", action="store_true", help="grant without asking (for scripts)")
    grant.add_argument("--revoke", action="store_true", help="withdraw everything granted to the workflow")
    grant.add_argument("--json", action="store_true")

    grants = commands.add_parser("grants", help="who granted what to a workflow, and when")
    grants.add_argument("workflow", metavar="WORKFLOW")
    grants.add_argument("--json", action="store_true")

    secrets = commands.add_parser("secrets", help="the names of the operator's secrets (never their values)")
    secrets.add_argument("--json", action="store_true")


def _version(flow: AgentFlow, name: str, version: str | None) -> WorkflowVersion:
    from agentflow import versions

    if not flow.store.list_versions(name):
        raise GrantUsageError(f"no workflow named '{name}'; save one with `agentflow run FILE` or in the app")
    try:
        return versions.resolve(flow.store, name, version)
    except versions.UnknownVersionError as exc:
        raise GrantUsageError(str(exc)) from None


def _named(stored: WorkflowVersion) -> str:
    """`'notify' v2 (id 3f2a1b2c3d4e)`: the number people use, and the id that never changes."""
    from agentflow import versions

    return f"{versions.title(stored)} (id {stored.version})"


def grant(flow: AgentFlow, args: argparse.Namespace) -> int:
    who = person()
    if args.revoke:
        if not flow.store.list_versions(args.workflow):
            raise GrantUsageError(f"no workflow named '{args.workflow}'")
        revoked = flow.grants.revoke(args.workflow, by=who)
        if args.json:
            print(json.dumps({"workflow": args.workflow, "revoked": True, "granted_by": revoked.granted_by}))
        else:
            print(f"revoked every grant of '{args.workflow}'; its versions that need anything wait for review")
        return 0
    stored = _version(flow, args.workflow, args.version)
    review = flow.review(stored)
    missing = review.missing
    if not missing:
        if args.json:
            print(
                json.dumps(
                    {
                        "workflow": stored.name,
                        "version": stored.version,
                        "number": stored.number,
                        "granted": False,
                        "missing": [],
                    }
                )
            )
        else:
            print(f"nothing to grant: {_named(stored)} needs only what is granted ({review.wanted.describe()})")
        return 0
    if not args.json:
        print(f"{_named(stored)} needs, beyond its grant:")
        for line in missing.lines():
            print(f"  + {line}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise GrantUsageError("not granted: confirm with --yes when not at a terminal")
        answer = input(f"Grant this as {who}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("not granted")
            return 1
    record = flow.grant_version(stored, by=who, note="agentflow grant")
    if args.json:
        print(
            json.dumps(
                {
                    "workflow": stored.name,
                    "version": stored.version,
                    "number": stored.number,
                    "granted": record is not None,
                    "missing": missing.lines(),
                    "granted_by": who,
                }
            )
        )
    else:
        print(f"granted by {who}; {_named(stored)} can run")
    return 0


def grants(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.trust.capabilities import Capabilities

    records = flow.store.list_grants(args.workflow)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "granted_at": record.granted_at,
                        "granted_by": record.granted_by,
                        "version": record.version,
                        "capabilities": record.capabilities,
                        "note": record.note,
                    }
                    for record in records
                ]
            )
        )
        return 0
    if not records:
        print(f"nothing was ever granted to '{args.workflow}'")
        return 0
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.granted_at))
        what = Capabilities.from_dict(record.capabilities).describe()
        stored = flow.store.get_workflow(args.workflow, record.version) if record.version else None
        version = f" ({_named(stored)})" if stored is not None else f" (id {record.version})" if record.version else ""
        print(f"{when}  {record.granted_by}{version}: {what}" + (f"  [{record.note}]" if record.note else ""))
    return 0


def secrets(flow: AgentFlow, args: argparse.Namespace) -> int:
    from agentflow.trust.secrets import ENV_PREFIX, MIN_SECRET_CHARS, OperatorSecrets

    provider = flow.engine.services.secrets
    names = sorted(provider)
    short = provider.short_names() if isinstance(provider, OperatorSecrets) else []
    if args.json:
        print(json.dumps({"names": names, "too_short": short}))
        return 0
    if names:
        print("secrets workflows may reference as ${env:NAME}: " + ", ".join(names))
    else:
        print(
            f"no secrets yet: set {ENV_PREFIX}NAME=value, or add NAME=value to "
            f"{getattr(provider, 'path', 'secrets.env')} (mode 0600)"
        )
    if short:
        print(f"ignored, shorter than {MIN_SECRET_CHARS} characters: " + ", ".join(short), file=sys.stderr)
    return 0
