"""The assistant: an LLM with tools that writes, patches, validates and runs the workflow.

Every YAML it proposes is validated first; errors go back to the model, at
most `MAX_REPAIRS` times in a turn. Models without tool calling answer with a
fenced YAML block instead, validated the same way.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow.chat.prompts import example_source, load_prompt
from agentflow.chat.workspace import PatchError, Turn, Workspace, plain_errors
from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.inputs import InputError
from agentflow.observability.costs import assistant_hooks
from agentflow.trust.grants import NeedsGrantError

if TYPE_CHECKING:
    from agentflow.chat.engine import ConversationEngine

MAX_REPAIRS = 3
MAX_TURNS = 10
HISTORY_MESSAGES = 20
FENCED_YAML = re.compile(r"```ya?ml\s*\n(.*?)```", re.DOTALL)
Progress = Callable[[str], None]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WriteArgs(_Args):
    yaml: str = Field(description="The complete workflow YAML")
    summary: str = Field("", description="One line: what this version does or changes")


class PatchOperation(_Args):
    op: str = Field("set", description="set or delete")
    path: str = Field(description="Dotted path, e.g. spec.nodes.draft.prompt")
    value: Any = None


class PatchArgs(_Args):
    operations: list[PatchOperation]
    summary: str = ""


class RunArgs(_Args):
    inputs: dict[str, Any] = Field(default_factory=dict)


class RunIdArgs(_Args):
    run_id: str


class OpenArgs(_Args):
    name: str


class NoArgs(_Args):
    pass


TOOLS: dict[str, tuple[str, type[_Args]]] = {
    "write_workflow": ("Create or replace the whole workflow (validated before it is accepted).", WriteArgs),
    "patch_workflow": ("Change parts of the current workflow by dotted path (validated).", PatchArgs),
    "validate_workflow": ("Validate the current workflow.", NoArgs),
    "run_workflow": ("Run the current workflow with inputs; returns status and outputs.", RunArgs),
    "get_run": ("A run's status, outputs and errors.", RunIdArgs),
    "list_workflows": ("The saved workflows.", NoArgs),
    "open_workflow": ("Open a saved workflow as the current one.", OpenArgs),
}
# Powers that belong to people only: a model asking for them (prompt injection, or habit) is told so.
PEOPLE_ONLY = {
    "decide_approval": "approvals are decided only by a person: tell them the run waits, and that they decide it "
    "with the Approve or Reject button in the Runs tab or /approve RUN",
    "approve": "approvals are decided only by a person (the Runs tab, or /approve RUN)",
    "grant_workflow": "capabilities are granted only by a person: say what the workflow needs; they click Grant "
    "or type /grant",
    "grant": "capabilities are granted only by a person (the Grant button, or /grant)",
}


@functools.cache
def _specs() -> tuple[dict[str, Any], ...]:
    # Generating the JSON Schemas costs more than the rest of a turn's own work: once per process.
    return tuple(
        {"type": "function", "function": {"name": name, "description": text, "parameters": args.model_json_schema()}}
        for name, (text, args) in TOOLS.items()
    )


def tool_specs() -> list[dict[str, Any]]:
    """The assistant's tools as the model is offered them (a fresh copy: a call may not change the cache)."""
    return copy.deepcopy(list(_specs()))


class Assistant:
    def __init__(self, engine: ConversationEngine) -> None:
        self.engine = engine

    def system_prompt(self, workspace: Workspace) -> str:
        current = workspace.current
        language = load_prompt(
            "language", tools=", ".join(self.engine.flow.engine.services.tools.names()), example=example_source("hello")
        )
        return load_prompt(
            "assistant",
            language=language,
            version=current.number if current else "none",
            current=current.source if current else "# (no workflow yet)\n",
        )

    async def respond(self, workspace: Workspace, text: str, turn: Turn, model: str, progress: Progress) -> str:
        history = [
            {"role": message.role, "content": message.content}
            for message in self.engine.history.messages(workspace.session_id, limit=HISTORY_MESSAGES + 1)[:-1]
            if message.role in ("user", "assistant")
        ]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt(workspace)},
            *history,
            {"role": "user", "content": text},
        ]
        services = self.engine.flow.engine.services
        llm = services.llm
        # Its calls are in the cost ledger as the assistant's, and stop with the global daily budget.
        hooks = assistant_hooks(self.engine.flow.store, services.ledger, workspace.session_id)
        tools: list[dict[str, Any]] | None = tool_specs()
        for _ in range(MAX_TURNS):
            try:
                result = await llm.complete(models=[model], messages=messages, tools=tools, **hooks)
            except Exception as exc:
                if tools is not None and "tool" in str(exc).lower():
                    # This model cannot call tools: ask for a fenced YAML block instead.
                    tools = None
                    messages[0]["content"] += "\n\n" + load_prompt("fenced")
                    continue
                raise
            if result.tool_calls:
                messages.append(result.message)
                for call in result.tool_calls:
                    progress(f"{call.name}…")
                    answer = self._call(workspace, call.name, call.arguments, turn, call.error)
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": await answer})
                if turn.gave_up:
                    return self._gave_up(turn)
                continue
            reply = result.text or ""
            block = FENCED_YAML.search(reply)
            if block and not turn.versions:
                outcome = self._propose(workspace, block.group(1), "", turn)
                if turn.gave_up:
                    return self._gave_up(turn)
                if outcome.startswith("error"):
                    messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": outcome}]
                    continue
                reply = FENCED_YAML.sub("(the workflow is shown beside the chat)", reply)
            return reply.strip() or "Done."
        return "I stopped after too many steps; tell me what to do next."

    def _gave_up(self, turn: Turn) -> str:
        problems = "\n".join(f"- {error}" for error in turn.errors)
        kept = "The last valid version is still current." if not turn.versions else ""
        return (
            f"I could not produce a valid workflow after {MAX_REPAIRS} repairs. The remaining problems:\n"
            f"{problems}\n{kept} Tell me how to proceed, or edit the YAML by hand."
        ).strip()

    def _propose(self, workspace: Workspace, source: str, summary: str, turn: Turn) -> str:
        proposal = workspace.propose(source, author="assistant", note=summary, turn=turn)
        if proposal.ok:
            turn.errors = []
            number = (
                proposal.version.number if proposal.version else (workspace.current.number if workspace.current else 0)
            )
            return f"accepted: valid, now draft {number}"
        turn.errors = plain_errors(proposal.errors)
        if turn.repaired >= MAX_REPAIRS:
            turn.gave_up = True
            return "error: still invalid and the repair limit is reached; stop and explain the problems to the person"
        turn.repaired += 1
        return "error: " + load_prompt("repair", errors="\n".join(f"- {error}" for error in turn.errors))

    async def _call(
        self, workspace: Workspace, name: str, arguments: dict[str, Any], turn: Turn, error: str | None
    ) -> str:
        if name in PEOPLE_ONLY:
            return f"error: refused: {PEOPLE_ONLY[name]}"
        if name not in TOOLS:
            return f"error: unknown tool {name}; available: {', '.join(TOOLS)}"
        if error:
            return f"error: the arguments were not a JSON object ({error})"
        try:
            args = TOOLS[name][1].model_validate(arguments)
        except ValidationError as exc:
            return f"error: bad arguments for {name}: {exc.errors(include_url=False)}"
        try:
            return await self._dispatch(workspace, name, args, turn)
        except NeedsGrantError as exc:
            missing = exc.review.missing.describe()
            return (
                f"error: not run: this version needs a person's grant first ({missing}). Tell the person exactly "
                "that, and that they grant it with the Grant button beside the diff or by typing /grant; you cannot."
            )
        except (PatchError, InputError, LookupError, ValueError, BudgetExceededError) as exc:
            return f"error: {exc}"

    async def _dispatch(self, workspace: Workspace, name: str, args: Any, turn: Turn) -> str:
        from agentflow.chat.commands import describe_run, find_run

        engine = self.engine
        if name == "write_workflow":
            return self._propose(workspace, args.yaml, args.summary, turn)
        if name == "patch_workflow":
            source = workspace.patched([operation.model_dump() for operation in args.operations])
            return self._propose(workspace, source, args.summary, turn)
        if name == "validate_workflow":
            current = workspace.current
            if current is None:
                return "there is no workflow yet"
            proposal = workspace.validate(current.source)
            return "valid" if proposal.ok else "invalid:\n" + "\n".join(plain_errors(proposal.errors))
        if name == "run_workflow":
            run = await workspace.run(args.inputs, wait=engine.run_wait)
            turn.run_ids.append(run.id)
            return describe_run(engine, run.id)
        if name == "get_run":
            return describe_run(engine, find_run(engine, args.run_id))
        if name == "list_workflows":
            return json.dumps([workflow.name for workflow in engine.flow.store.list_workflows()])
        if name == "open_workflow":
            stored = engine.flow.store.get_workflow(args.name)
            if stored is None:
                return f"error: no saved workflow '{args.name}'"
            return self._propose(workspace, stored.source, f"opened {args.name}", turn)
        raise LookupError(f"unknown tool {name}")
