"""`agentflow memory list|search|show|forget|export`: what workflows remember, for the operator to inspect.

A workflow's memory is every scope named after it: `workflow:NAME`, `agent:NAME/NODE`, `user:NAME/PERSON`,
`session:NAME/CHAT`. `--workflow NAME` means all of them; `--scope` names one exactly (`global` too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.memory.base import MemoryItem, MemoryStore
    from agentflow.settings import Settings

COMMANDS = frozenset({"memory"})
PAGE = 500


class MemoryUsageError(Exception):
    """A memory command that cannot be done as asked (the CLI prints it, exit code 2)."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    memory = commands.add_parser("memory", help="what workflows remember: list, search, show, forget, export")
    sub = memory.add_subparsers(dest="memory_command", required=True, metavar="COMMAND")

    def where(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workflow", metavar="NAME", help="every scope of this workflow")
        parser.add_argument("--scope", metavar="SCOPE", help="one scope exactly: workflow:NAME, global, ...")

    listing = sub.add_parser("list", help="the scopes and their sizes; with --workflow/--scope, the memories")
    where(listing)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    search = sub.add_parser("search", help="search memories as a node's recall would (keywords)")
    search.add_argument("query")
    where(search)
    search.add_argument("-k", "--top-k", type=int, default=5)
    search.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one memory, whole")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    forget = sub.add_parser("forget", help="delete one memory (ID), or a whole scope or workflow")
    forget.add_argument("id", metavar="ID", nargs="?")
    where(forget)
    export = sub.add_parser("export", help="the memories as JSON lines (stdout, or --output FILE)")
    where(export)
    export.add_argument("-o", "--output", type=Path, metavar="FILE")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from agentflow.memory.open import open_memory

    store = open_memory(settings)
    try:
        command = {"list": _list, "search": _search, "show": _show, "forget": _forget, "export": _export}
        return command[args.memory_command](store, args)
    finally:
        store.close()


def scopes_of(store: MemoryStore, workflow: str | None, scope: str | None) -> list[str]:
    """The scopes `--workflow`/`--scope` mean; MemoryUsageError when they mean none."""
    from agentflow.memory.base import parse_scope

    if workflow and scope:
        raise MemoryUsageError("give --workflow or --scope, not both")
    if scope:
        try:
            parse_scope(scope)
        except ValueError as exc:
            raise MemoryUsageError(f"--scope {scope}: {exc}") from None
        return [scope]
    if not workflow:
        return [name for name, _ in store.scopes()]
    return [name for name, _ in store.scopes() if belongs(name, workflow)]


def belongs(scope: str, workflow: str) -> bool:
    """Whether a scope is one of the workflow's own (never `global`)."""
    from agentflow.memory.base import parse_scope

    kind, key = parse_scope(scope)
    return kind != "global" and (key == workflow or key.startswith(workflow + "/"))


def items_of(store: MemoryStore, scopes: list[str]) -> Iterator[MemoryItem]:
    for scope in scopes:
        offset = 0
        while True:
            page = store.list(scope, limit=PAGE, offset=offset)
            yield from page
            if len(page) < PAGE:
                break
            offset += PAGE


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "-"


def _line(item: MemoryItem, width: int = 100) -> str:
    text = " ".join(item.text.split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return f"{item.id}  {_when(item.updated_at)}  {item.scope}  {text}"


def _list(store: MemoryStore, args: argparse.Namespace) -> int:
    if not args.workflow and not args.scope:
        sizes = store.scopes()
        if args.json:
            print(json.dumps([{"scope": name, "count": count} for name, count in sizes]))
        elif not sizes:
            print("nothing remembered yet")
        for name, count in sizes if not args.json else ():
            print(f"{count:>7}  {name}")
        return 0
    scopes = scopes_of(store, args.workflow, args.scope)
    items = []
    for item in items_of(store, scopes):
        items.append(item)
        if len(items) >= args.limit:
            break
    if args.json:
        print(json.dumps([item.to_dict() for item in items], ensure_ascii=False))
        return 0
    if not items:
        print(f"nothing remembered in {args.scope or 'workflow ' + args.workflow}")
    for item in items:
        print(_line(item))
    return 0


def _search(store: MemoryStore, args: argparse.Namespace) -> int:
    scopes = scopes_of(store, args.workflow, args.scope)
    hits = store.search(scopes, args.query, k=args.top_k) if scopes else []
    if args.json:
        print(json.dumps([{"score": hit.score, **hit.item.to_dict()} for hit in hits], ensure_ascii=False))
        return 0
    if not hits:
        print("no memory matches")
    for hit in hits:
        print(f"{hit.score:8.4f}  {_line(hit.item)}")
    return 0


def _show(store: MemoryStore, args: argparse.Namespace) -> int:
    item = store.get(args.id)
    if item is None:
        raise MemoryUsageError(f"no memory {args.id}; `agentflow memory list --workflow NAME` shows their ids")
    if args.json:
        print(json.dumps(item.to_dict(), ensure_ascii=False, indent=2))
        return 0
    fields: dict[str, Any] = {
        "id": item.id,
        "scope": item.scope,
        "tags": ", ".join(item.tags) or "-",
        "importance": item.importance,
        "from run": item.source_run or "-",
        "created": _when(item.created_at),
        "updated": _when(item.updated_at),
        "expires": _when(item.expires_at) if item.expires_at else "never",
    }
    for key, value in fields.items():
        print(f"{key + ':':<12} {value}")
    print()
    print(item.text)
    if item.data is not None:
        print(json.dumps(item.data, ensure_ascii=False, indent=2))
    return 0


def _forget(store: MemoryStore, args: argparse.Namespace) -> int:
    if args.id:
        if args.workflow or args.scope:
            raise MemoryUsageError("give an ID, or --workflow/--scope, not both")
        if not store.delete(args.id):
            raise MemoryUsageError(f"no memory {args.id}")
        print(f"forgot {args.id}")
        return 0
    if not args.workflow and not args.scope:
        raise MemoryUsageError("say what to forget: an ID, --scope SCOPE or --workflow NAME")
    total = sum(store.forget(scope) for scope in scopes_of(store, args.workflow, args.scope))
    print(f"forgot {total} memor{'y' if total == 1 else 'ies'} of {args.scope or 'workflow ' + args.workflow}")
    return 0


def _export(store: MemoryStore, args: argparse.Namespace) -> int:
    scopes = scopes_of(store, args.workflow, args.scope)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    count = 0
    try:
        for item in items_of(store, scopes):
            out.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"exported {count} memories to {args.output}")
    return 0
