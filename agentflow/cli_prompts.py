"""`agentflow prompts push|list|show`: a workflow's prompts in MLflow's prompt registry (docs/prompts.md).

The registry is the app's MLflow tracking store (MLFLOW_TRACKING_URI, else mlflow.db in the data
directory), so what is pushed here is what `prompts:/` references load at run time.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.prompts.registry import PromptRegistry

COMMANDS = frozenset({"prompts"})
DEFAULT_ALIAS = "production"


class PromptsUsageError(Exception):
    """A prompts command that cannot be done as asked (the CLI prints it, exit code 2)."""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prompts = commands.add_parser("prompts", help="prompts in MLflow's prompt registry: push, list, show")
    sub = prompts.add_subparsers(dest="prompts_command", required=True, metavar="COMMAND")
    push = sub.add_parser("push", help="register a workflow's inline prompts and print the references to use")
    push.add_argument("file", metavar="WORKFLOW_FILE", help="the workflow's YAML file")
    push.add_argument("--alias", default=DEFAULT_ALIAS, help=f"the alias to point at them (default {DEFAULT_ALIAS})")
    push.add_argument("--node", metavar="NODE", help="only this node's prompts")
    push.add_argument("--name", metavar="NAME", help="register under NAME instead of WORKFLOW.NODE (one node)")
    push.add_argument("--message", "-m", metavar="TEXT", help="the commit message (default: where they came from)")
    push.add_argument("--json", action="store_true", help="print what was pushed as JSON")
    listing = sub.add_parser("list", help="registered prompts: newest version, aliases, workflow and node")
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one prompt version's template (NAME, NAME@ALIAS or NAME/VERSION)")
    show.add_argument("target", metavar="NAME[@ALIAS]", help="e.g. triage.classify@production; NAME alone: latest")
    show.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    from agentflow.prompts.push import PushError
    from agentflow.prompts.refs import PromptRefError
    from agentflow.prompts.registry import PromptNotFound, PromptRegistry
    from agentflow.settings import Settings, SettingsError

    try:
        registry = PromptRegistry.for_home(Settings.from_env().home)
        if args.prompts_command == "push":
            return _push(registry, args)
        if args.prompts_command == "list":
            return _list(registry, as_json=args.json)
        return _show(registry, args.target, as_json=args.json)
    except (PushError, PromptRefError, PromptNotFound, SettingsError) as exc:
        raise PromptsUsageError(str(exc)) from None


def _push(registry: PromptRegistry, args: argparse.Namespace) -> int:
    from agentflow.prompts.push import inline_prompts, push
    from agentflow.prompts.refs import ALIAS, PromptRefError
    from agentflow.spec.errors import SpecErrors
    from agentflow.spec.validate import load_workflow_file

    if not re.fullmatch(ALIAS, args.alias):
        raise PromptRefError(f"--alias {args.alias!r}: an alias is letters, digits, '_' and '-', e.g. production")
    try:
        workflow = load_workflow_file(args.file)
    except SpecErrors as exc:
        raise PromptsUsageError(f"the workflow is not valid; fix it first:\n{exc}") from None
    prompts = inline_prompts(workflow, node=args.node, name=args.name)
    message = args.message or f"pushed from {Path(args.file).name} (workflow {workflow.name})"
    results = push(registry, workflow, prompts, alias=args.alias, message=message)
    if args.json:
        rows = [_pushed_dict(result) for result in results]
        print(json.dumps({"registry": registry.tracking_uri, "alias": args.alias, "prompts": rows}))
        return 0
    print(f"registry: {registry.tracking_uri}")
    for result in results:
        state = "registered" if result.created else "unchanged"
        print(f"  {result.prompt.where:<32} {state} {result.prompt.name} v{result.version} → @{args.alias}")
    print("\nto load them from the registry, write these references in the YAML:")
    for result in results:
        print(f'  {result.prompt.where}: "{result.ref}"')
    return 0


def _pushed_dict(result: Any) -> dict[str, Any]:
    prompt = result.prompt
    return {
        "node": prompt.node_id,
        "field": prompt.field,
        "variant": prompt.variant,
        "name": prompt.name,
        "version": result.version,
        "created": result.created,
        "ref": result.ref,
    }


def _list(registry: PromptRegistry, *, as_json: bool) -> int:
    summaries = registry.list()
    if as_json:
        print(json.dumps([asdict(summary) for summary in summaries]))
        return 0
    if not summaries:
        print(f"no prompts in {registry.tracking_uri}; push a workflow's with `agentflow prompts push FILE`")
        return 0
    print(f"{'NAME':<36} {'LATEST':>6}  {'ALIASES':<28} WORKFLOW/NODE")
    for summary in summaries:
        aliases = ", ".join(f"{alias}→v{version}" for alias, version in sorted(summary.aliases.items())) or "-"
        origin = "/".join(summary.tags[key] for key in ("workflow", "node") if key in summary.tags) or "-"
        latest = f"v{summary.latest}" if summary.latest else "-"
        print(f"{summary.name:<36} {latest:>6}  {aliases:<28} {origin}")
    return 0


def _show(registry: PromptRegistry, target: str, *, as_json: bool) -> int:
    from agentflow.prompts.refs import parse_target

    prompt = registry.load(parse_target(target), fresh=True)
    if as_json:
        print(
            json.dumps(
                {
                    "name": prompt.name,
                    "version": prompt.version,
                    "aliases": list(prompt.aliases),
                    "commit_message": prompt.commit_message,
                    "tags": prompt.tags,
                    "template": prompt.template,
                }
            )
        )
        return 0
    aliases = f" (aliases: {', '.join(prompt.aliases)})" if prompt.aliases else ""
    print(f"{prompt.label}{aliases}")
    if prompt.commit_message:
        print(f"message: {prompt.commit_message}")
    if prompt.tags:
        print("tags: " + ", ".join(f"{key}={value}" for key, value in sorted(prompt.tags.items())))
    print()
    print(prompt.template)
    return 0
