"""`agentflow agents list|add|remove|token`: the agent registry, on this machine's data directory."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.registry import Agent, Registry
    from agentflow.settings import Settings

COMMANDS = frozenset({"agents"})
SOURCES = {"registered": "registered itself", "url": "added by URL"}


class AgentsUsageError(Exception):
    """An agents command that cannot be done as asked (the CLI prints it, exit code 2)."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agents = commands.add_parser("agents", help="the A2A agent registry: list, add, remove, enrolment tokens")
    sub = agents.add_subparsers(dest="agents_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="every agent: name, skills, source, state, last heartbeat, latency")
    listing.add_argument("--json", action="store_true")
    add = sub.add_parser("add", help="add an agent by its card URL or base URL (then polled every TTL/3)")
    add.add_argument("url", metavar="URL")
    add.add_argument("--json", action="store_true")
    remove = sub.add_parser("remove", help="remove an agent from the registry")
    remove.add_argument("id", metavar="ID")
    token = sub.add_parser("token", help="issue a one-time enrolment token (or --list, --revoke ID)")
    token.add_argument("--note", help="who or what it is for (shown in --list)")
    token.add_argument("--ttl", default="24h", help="how long it stays valid: 30m, 24h, 7d (default 24h)")
    token.add_argument("--list", action="store_true", help="the tokens issued, newest first")
    token.add_argument("--revoke", metavar="ID", help="revoke an unused token")
    token.add_argument("--json", action="store_true")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from agentflow.registry import Registry
    from agentflow.store import open_store

    store = open_store(settings)
    try:
        registry = Registry(store, settings)
        command = {"list": _list, "add": _add, "remove": _remove, "token": _token}
        return command[args.agents_command](registry, args)
    finally:
        store.close()


def _errors(registry: Registry, call: Any) -> Any:
    from agentflow.registry import RegistryError
    from agentflow.registry.cards import CardError

    try:
        return call()
    except (RegistryError, CardError) as exc:
        raise AgentsUsageError(str(exc)) from None


def agent_dict(agent: Agent) -> dict[str, Any]:
    from agentflow.registry.models import agent_json

    return agent_json(agent)


def _ago(at: float | None) -> str:
    if at is None:
        return "never"
    seconds = max(time.time() - at, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _list(registry: Registry, args: argparse.Namespace) -> int:
    agents = registry.list()
    if args.json:
        print(json.dumps([agent_dict(agent) for agent in agents], indent=2))
        return 0
    if not agents:
        print("no agents; add one with `agentflow agents add URL`, or issue a token with `agentflow agents token`")
        return 0
    rows = [
        (
            agent.name,
            agent.id,
            ", ".join(skill.id for skill in agent.skills) or "-",
            SOURCES.get(agent.source, agent.source),
            agent.state,
            _ago(agent.last_seen),
            "-" if agent.latency_ms is None else f"{agent.latency_ms:.0f} ms",
        )
        for agent in agents
    ]
    header = ("NAME", "ID", "SKILLS", "SOURCE", "STATE", "LAST HEARD", "LATENCY")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _add(registry: Registry, args: argparse.Namespace) -> int:
    agent = _errors(registry, lambda: asyncio.run(registry.add_url(args.url)))
    if args.json:
        print(json.dumps(agent_dict(agent), indent=2))
    else:
        skills = ", ".join(skill.id for skill in agent.skills) or "no skills"
        print(f"added {agent.name} ({agent.id}) at {agent.url}: {skills}")
    return 0


def _remove(registry: Registry, args: argparse.Namespace) -> int:
    _errors(registry, lambda: registry.remove(args.id))
    print(f"removed agent {args.id}")
    return 0


def _token(registry: Registry, args: argparse.Namespace) -> int:
    from agentflow.registry.models import token_json
    from agentflow.settings import parse_duration

    if args.list and args.revoke:
        raise AgentsUsageError("give --list or --revoke ID, not both")
    if args.list:
        tokens = registry.tokens()
        if args.json:
            print(json.dumps([token_json(token) for token in tokens], indent=2))
        for token in [] if args.json else tokens:
            status = (
                f"used by {token.used_by}"
                if token.used_at
                else "revoked"
                if token.revoked_at
                else "expired"
                if token.expires_at <= time.time()
                else "unused"
            )
            print(f"{token.id}  {status:<28}  {token.note or ''}".rstrip())
        if not tokens and not args.json:
            print("no enrolment tokens; issue one with `agentflow agents token`")
        return 0
    if args.revoke:
        _errors(registry, lambda: registry.revoke_token(args.revoke))
        print(f"revoked enrolment token {args.revoke}")
        return 0
    ttl_s = parse_duration(args.ttl)
    if ttl_s is None:
        raise AgentsUsageError(f"--ttl {args.ttl!r} is not a duration; give e.g. 30m, 24h or 7d")
    token, value = registry.issue_token(note=args.note, ttl_s=ttl_s)
    if args.json:
        print(json.dumps({"id": token.id, "token": value, "expires_at": token.expires_at, "note": token.note}))
        return 0
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(token.expires_at))
    print(value)
    print(
        f"enrolment token {token.id}, valid once until {until}; it is shown only now. "
        "The agent enrols with POST /api/registry/enrol {token, card_url}.",
        file=sys.stderr,
    )
    return 0
