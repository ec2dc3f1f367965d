"""Slash commands: everything that works with no model at all.

Their words follow docs/versions.md: the conversation's edits are *drafts* (draft 3), a workflow's
stored versions are *versions* (greeter v2).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentflow import versions
from agentflow.chat.history import unified_diff
from agentflow.chat.prompts import example_names, example_source, example_summary
from agentflow.chat.workspace import PatchError, Turn, Workspace, plain_errors
from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.inputs import InputError, parse_pairs
from agentflow.progress import run_summary
from agentflow.store.base import WorkflowVersion
from agentflow.trust.grants import NeedsGrantError

if TYPE_CHECKING:
    from agentflow.chat.engine import ConversationEngine

Handler = Callable[["ConversationEngine", Workspace, list[str], Turn], Awaitable[str]]
COMMANDS: dict[str, tuple[str, str, Handler]] = {}

BLANK = """apiVersion: agentflow/v1
kind: Workflow
metadata:
  name: my-workflow
  description: Describe what it does
spec:
  inputs:
    text: {type: string, description: what the workflow works on}
  nodes:
    echo:
      type: transform
      expr: inputs.text
  outputs:
    result: "{{ echo }}"
"""


def command(name: str, usage: str, summary: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (usage, summary, handler)
        return handler

    return register


async def run_command(engine: ConversationEngine, workspace: Workspace, text: str, turn: Turn) -> str:
    try:
        words = shlex.split(text.strip())
    except ValueError as exc:
        return f"Could not read that command ({exc}); check the quotes."
    name, args = words[0].lstrip("/").lower(), words[1:]
    if name not in COMMANDS:
        from difflib import get_close_matches

        close = get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean /{close[0]}?" if close else ""
        return f"Unknown command /{name}.{hint} Type /help for the list."
    try:
        return await COMMANDS[name][2](engine, workspace, args, turn)
    except NeedsGrantError as exc:
        lines = "\n".join(f"- {line}" for line in exc.review.missing.lines())
        what = version_title(engine, exc.review.workflow, exc.review.version)
        return (
            f"Not run: {what} needs your grant first. It would be able to use:\n{lines}\n"
            "Type /grant (or click Grant) to allow it."
        )
    except (PatchError, InputError, LookupError, ValueError, BudgetExceededError) as exc:
        return f"/{name}: {exc}"


def _parse_inputs(args: list[str]) -> dict[str, Any]:
    return dict(parse_pairs(args, example="/run ticket='printer on fire'"))


def version_title(engine: ConversationEngine, workflow: str, version: str | None) -> str:
    """`greeter v2`, or the workflow's name alone for a version that is not stored."""
    stored = engine.flow.store.get_workflow(workflow, version) if version else None
    return versions.title(stored) if stored is not None else f"'{workflow}'"


def describe_run(engine: ConversationEngine, run_id: str) -> str:
    store = engine.flow.store
    run = store.get_run(run_id)
    if run is None:
        return f"No run {run_id}."
    summary = run_summary(run, store.node_runs(run_id))
    lines = [f"Run {run.id[:12]} of {version_title(engine, run.workflow, run.version)}: **{run.status}**"]
    if run.error:
        lines.append(f"Error: {run.error}")
    if run.outputs is not None:
        lines.append(
            "Outputs:\n```json\n" + json.dumps(run.outputs, indent=2, ensure_ascii=False, default=str) + "\n```"
        )
    if summary["tokens"]:
        lines.append(f"{summary['tokens']} tokens, ${summary['cost_usd']:.6f}")
    if run.status == "waiting_approval":
        approval = store.pending_approval(run_id)
        if approval is not None:
            lines.append(f"Waiting for approval at '{approval.node_id}': {approval.message}")
            lines.append(f"Reply /approve {run.id[:12]} or /reject {run.id[:12]}.")
    elif run.status in ("queued", "running"):
        lines.append(f"Still {run.status}; /status {run.id[:12]} shows progress.")
    return "\n".join(lines)


def find_run(engine: ConversationEngine, run_id: str) -> str:
    store = engine.flow.store
    if store.get_run(run_id) is not None:
        return run_id
    matches = store.find_run(run_id)
    if len(matches) != 1:
        raise LookupError(f"no single run matches '{run_id}'; /runs lists them")
    return matches[0].id


@command("help", "/help", "this list")
async def _help(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    lines = ["Commands (they work without a model):"]
    lines += [f"- `{usage}` — {summary}" for usage, summary, _ in COMMANDS.values()]
    lines.append(
        "Anything else is a message to the assistant"
        + ("." if engine.model_for(workspace) else " (not configured yet).")
    )
    return "\n".join(lines)


@command("new", "/new [example]", "start a new workflow, blank or from an example")
async def _new(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    if args:
        try:
            source = example_source(args[0])
        except FileNotFoundError:
            raise LookupError(f"no example '{args[0]}'; /examples lists them") from None
    else:
        source = BLANK
    # An example ships with AgentFlow and the person asked for it: what it needs is granted by them.
    proposal = workspace.propose(
        source,
        author="command",
        note=f"/new {' '.join(args)}".strip(),
        turn=turn,
        granted_by=turn.person if args else None,
    )
    if not proposal.ok:
        turn.errors = plain_errors(proposal.errors)
        return "That template is not valid: " + "; ".join(turn.errors)
    what = f"example '{args[0]}'" if args else "a blank workflow"
    return f"Started {what}. Edit it here or describe changes; /run to run it."


@command("examples", "/examples", "list the example workflows")
async def _examples(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    return "Examples (open one with /new NAME):\n" + "\n".join(
        f"- `{name}` — {example_summary(name)}" for name in example_names()
    )


@command("show", "/show", "show the current workflow")
async def _show(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    current = workspace.current
    if current is None:
        return "No workflow yet. Describe one, or start with /new or /new EXAMPLE."
    stored = workspace.stored()
    saved = f" (saved as {versions.title(stored)})" if stored is not None else " (not saved as a version yet)"
    return f"Draft {current.number}{saved}:\n```yaml\n{current.source}```"


@command("validate", "/validate", "validate the current workflow")
async def _validate(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    current = workspace.current
    if current is None:
        return "No workflow yet to validate."
    proposal = workspace.validate(current.source)
    if proposal.workflow is None:
        turn.errors = plain_errors(proposal.errors)
        return "Not valid:\n" + "\n".join(f"- {error}" for error in turn.errors)
    return f"Valid: '{proposal.workflow.name}' with {len(proposal.workflow.spec.nodes)} nodes."


@command("run", "/run [key=value ...]", "run the current workflow with these inputs")
async def _run(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    run = await workspace.run(_parse_inputs(args), wait=engine.run_wait)
    turn.run_ids.append(run.id)
    return describe_run(engine, run.id)


@command("runs", "/runs", "recent runs of the current workflow")
async def _runs(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    current = workspace.current
    name = workspace.validate(current.source).workflow.name if current else None  # type: ignore[union-attr]
    runs = engine.flow.store.list_runs(limit=10, workflow=name)
    if not runs:
        return "No runs yet; /run starts one."
    return "Recent runs:\n" + "\n".join(
        f"- `{run.id[:12]}` {run.workflow} **{run.status}** {run.tokens} tokens ${run.cost_usd:.6f}" for run in runs
    )


@command("status", "/status RUN", "a run's status and outputs")
async def _status(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    if not args:
        raise LookupError("give a run id: /status RUN (see /runs)")
    return describe_run(engine, find_run(engine, args[0]))


async def _decide(engine: ConversationEngine, args: list[str], turn: Turn, *, approved: bool) -> str:
    if not args:
        raise LookupError("give a run id: /approve RUN [comment] (see /runs)")
    run_id = find_run(engine, args[0])
    comment = " ".join(args[1:]) or None
    approval = engine.flow.store.decide_approval(run_id, approved=approved, comment=comment, decided_by=turn.person)
    if approval is None:
        raise LookupError(f"run {run_id[:12]} has no pending approval")
    engine.flow.executor.wake()
    turn.run_ids.append(run_id)
    settled = await engine.wait_settled(run_id)
    verb = "Approved" if approved else "Rejected"
    return f"{verb} '{approval.node_id}'.\n" + describe_run(engine, settled)


@command("approve", "/approve RUN [comment]", "approve a run waiting for you")
async def _approve(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    return await _decide(engine, args, turn, approved=True)


@command("reject", "/reject RUN [comment]", "reject a run waiting for you")
async def _reject(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    return await _decide(engine, args, turn, approved=False)


@command("grant", "/grant", "allow the current draft what it needs beyond its grant (tools, hosts, secrets)")
async def _grant(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    review = workspace.review()
    if review is None:
        return "No valid workflow to grant yet."
    if not review.needs_review:
        return f"Nothing to grant: '{review.workflow}' uses only what is granted ({review.wanted.describe()})."
    lines = "\n".join(f"- {line}" for line in review.missing.lines())
    workspace.grant(by=turn.person)
    stored = workspace.stored()  # granting saved the draft as a version: the grant names it
    what = versions.title(stored) if stored is not None else f"'{review.workflow}'"
    return f"Granted by {turn.person}; {what} may now use:\n{lines}\n/run runs it."


@command("undo", "/undo", "go back to the previous draft")
async def _undo(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    if not engine.history.can_undo(workspace.session_id):
        return "Nothing to undo."
    draft = engine.history.undo(workspace.session_id)
    return f"Back to draft {draft.number}." if draft else "Back to an empty workflow."


@command("redo", "/redo", "redo the last undone edit")
async def _redo(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    draft = engine.history.redo(workspace.session_id)
    return f"Redone: draft {draft.number}." if draft else "Nothing to redo."


_DRAFT = re.compile(r"(?:d|draft)?(\d{1,6})", re.IGNORECASE)


def _side(engine: ConversationEngine, workspace: Workspace, ref: str) -> tuple[str, str]:
    """A /diff argument as (label, YAML): `3` is draft 3 of this conversation, `v2` a saved version."""
    number = _DRAFT.fullmatch(ref)
    if number is not None:
        draft = engine.history.version(workspace.session_id, int(number.group(1)))
        if draft is None:
            raise LookupError(f"this conversation has no draft {number.group(1)}; /history lists its drafts")
        return f"draft {draft.number}", draft.source
    name = workflow_name(workspace)
    if name is None:
        raise LookupError(f"'{ref}' names a saved version, but there is no workflow yet; /save NAME saves one")
    stored = versions.resolve(engine.flow.store, name, ref)
    return versions.title(stored), stored.source


@command("diff", "/diff [A B]", "the last edit, or from A to B: drafts (1 3) or saved versions (v1 v2)")
async def _diff(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    if len(args) == 2:
        (before_label, before), (after_label, after) = (_side(engine, workspace, arg) for arg in args)
        diff = unified_diff(before, after, before_label=before_label, after_label=after_label)
    elif args:
        raise LookupError("give two drafts or versions, e.g. /diff 1 3 or /diff v1 v2; /diff alone shows the last edit")
    else:
        current = workspace.current
        if current is None:
            return "No edits yet."
        diff = current.diff
    return f"```diff\n{diff}```" if diff else "No differences."


@command("history", "/history", "the drafts of this conversation")
async def _history(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    drafts = engine.history.versions(workspace.session_id)
    if not drafts:
        return "No drafts yet."
    current = workspace.current
    stored = workspace.stored()
    saved = f" (saved as {versions.title(stored)})" if stored is not None else ""
    lines = [
        "Drafts of this conversation (/diff 1 3 compares two; /undo and /redo move between them; "
        "/versions lists the saved versions):"
    ]
    for draft in drafts:
        marker = f" ← current{saved}" if current and draft.number == current.number else ""
        lines.append(f"- draft {draft.number} by {draft.author}: {draft.note or '(edit)'}{marker}")
    return "\n".join(lines)


def workflow_name(workspace: Workspace) -> str | None:
    current = workspace.current
    workflow = workspace.validate(current.source).workflow if current is not None else None
    return workflow.name if workflow is not None else None


@command("versions", "/versions [NAME]", "the saved versions of this workflow, or of NAME")
async def _versions(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    name = args[0] if args else workflow_name(workspace)
    if name is None:
        return "No workflow yet; /open lists the saved ones."
    store = engine.flow.store
    saved = store.list_versions(name)
    if not saved:
        raise versions.UnknownVersionError(versions.missing(store, name))
    current, draft = store.get_workflow(name), workspace.stored()
    lines = [f"Saved versions of '{name}', newest first (/diff v1 v2 compares two; /open {name} v1 opens one):"]
    for stored in saved:
        marks = [mark for mark, same in (("current", current), ("this draft", draft)) if same == stored]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(stored.created_at))
        lines.append(
            f"- {versions.label(stored)} `{stored.version}` {when}" + (f" ← {', '.join(marks)}" if marks else "")
        )
    return "\n".join(lines)


@command("save", "/save NAME", "save this draft as the next version of workflow NAME")
async def _save(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    if not args:
        raise LookupError("give a name: /save NAME (lowercase letters, digits and dashes)")
    if workspace.current is None:
        return "No workflow to save yet."
    proposal = workspace.propose(workspace.renamed(args[0]), author="command", note=f"/save {args[0]}", turn=turn)
    if not proposal.ok:
        turn.errors = plain_errors(proposal.errors)
        return "Cannot save under that name: " + "; ".join(turn.errors)
    existing, previous = workspace.stored(), engine.flow.store.get_workflow(args[0])
    stored = workspace.save()
    what = f"{versions.title(stored)} (`{stored.version}`)"
    if existing is None:
        return f"Saved as {what}. /versions lists its versions; the Workflows tab compares them."
    if previous == existing:
        return f"Already saved: this draft is {what}."
    return f"This draft is {what}, saved before; it is the current version again."


def open_stored(workspace: Workspace, stored: WorkflowVersion, turn: Turn, *, note: str) -> str:
    """Make a stored version the conversation's current draft; the answer says which draft it became."""
    proposal = workspace.propose(stored.source, author="command", note=note, turn=turn)
    if not proposal.ok:
        turn.errors = plain_errors(proposal.errors)
        return f"{versions.title(stored)} is no longer valid here:\n" + "\n".join(f"- {e}" for e in turn.errors)
    current = workspace.current
    draft = f"draft {current.number}" if current is not None else "the current draft"
    return f"Opened {versions.title(stored)} as {draft}. Describe changes, edit the YAML, or press Run."


@command("open", "/open [NAME [VERSION]]", "open a saved workflow (its current version, or e.g. v1)")
async def _open(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    if not args:
        names = [workflow.name for workflow in engine.flow.store.list_workflows()]
        return "Saved workflows: " + (", ".join(names) if names else "none yet (/save NAME)")
    stored = versions.resolve(engine.flow.store, args[0], args[1] if len(args) > 1 else None)
    return open_stored(workspace, stored, turn, note=f"/open {' '.join(args)}")


@command("model", "/model [NAME]", "show or set the assistant's model (a LiteLLM name)")
async def _model(engine: ConversationEngine, workspace: Workspace, args: list[str], turn: Turn) -> str:
    if not args:
        model = engine.model_for(workspace)
        return f"The assistant uses {model}." if model else engine.not_configured()
    engine.history.update_session(workspace.session_id, model=args[0])
    return f"The assistant now uses {args[0]} in this conversation."
