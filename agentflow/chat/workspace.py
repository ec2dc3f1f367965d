"""A session's workflow: propose (validated) edits, patch by path, save, run."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentflow.chat.history import ChatHistory, ConfigVersion
from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.runtime import AgentFlow
from agentflow.spec.errors import SpecError, SpecErrors
from agentflow.spec.models import Workflow
from agentflow.store.base import GrantRecord, RunRecord
from agentflow.store.sqlite import content_hash
from agentflow.trust.grants import Review

SETTLED = TERMINAL_STATUSES | {"waiting_approval"}


class PatchError(ValueError):
    """A patch operation that cannot apply; the message names the path."""


@dataclass(slots=True)
class Turn:
    """What one chat turn did, for the reply."""

    versions: list[ConfigVersion] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    repaired: int = 0
    gave_up: bool = False
    run_ids: list[str] = field(default_factory=list)
    person: str = "chat"
    """Who typed this turn: slash commands act as this person (the assistant never does)."""


@dataclass(slots=True)
class Proposal:
    workflow: Workflow | None
    errors: list[SpecError]
    version: ConfigVersion | None = None

    @property
    def ok(self) -> bool:
        return self.workflow is not None


def plain_errors(errors: list[SpecError]) -> list[str]:
    """Errors as `line L, column C: message` (no file name: the person sees one workflow)."""
    return [f"line {error.line}, column {error.column}: {error.message}" for error in errors]


class Workspace:
    def __init__(self, flow: AgentFlow, history: ChatHistory, session_id: str) -> None:
        self.flow = flow
        self.history = history
        self.session_id = session_id

    @property
    def current(self) -> ConfigVersion | None:
        return self.history.current(self.session_id)

    def validate(self, source: str) -> Proposal:
        try:
            workflow = self.flow.load(source, "workflow.yaml")
        except SpecErrors as exc:
            return Proposal(None, exc.errors)
        return Proposal(workflow, [])

    def propose(
        self,
        source: str,
        *,
        author: str,
        note: str = "",
        turn: Turn | None = None,
        granted_by: str | None = None,
    ) -> Proposal:
        """Validate `source`; only a valid workflow becomes the session's new version.

        `granted_by`: a person wrote this edit themselves, so what the edit adds is granted by them
        (never what an earlier, unreviewed version of the assistant had already added).
        """
        source = source if source.endswith("\n") else source + "\n"
        before = self.current
        proposal = self.validate(source)
        if proposal.ok:
            assert proposal.workflow is not None
            proposal.version = self.history.add_version(self.session_id, source, author=author, note=note)
            if proposal.version is not None and turn is not None:
                turn.versions.append(proposal.version)
            if granted_by is not None:
                previous = self.validate(before.source).workflow if before is not None else None
                self.flow.grants.grant_edit(proposal.workflow, content_hash(source), previous, by=granted_by)
        return proposal

    def review(self) -> Review | None:
        """The current version's capabilities against its workflow's grant (None without a valid one)."""
        current = self.current
        workflow = self.validate(current.source).workflow if current is not None else None
        if workflow is None or current is None:
            return None
        return self.flow.grants.review(workflow, content_hash(current.source))

    def grant(self, *, by: str) -> GrantRecord | None:
        """A person grants what the current version needs; it is stored, so the grant names a real version."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow to grant yet")
        stored = self.flow.save_workflow(current.source)
        return self.flow.grant_version(stored, by=by, note="granted in the chat")

    def patched(self, operations: list[dict[str, Any]]) -> str:
        """The current YAML with set/delete operations applied to dotted paths."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow yet to patch; write one first")
        data = yaml.safe_load(current.source)
        for operation in operations:
            _apply(data, operation)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)

    def save(self) -> Workflow:
        """Store the current version as a saved workflow (the key is metadata.name)."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow to save yet")
        self.flow.save_workflow(current.source)
        proposal = self.validate(current.source)
        assert proposal.workflow is not None
        return proposal.workflow

    async def run(self, inputs: dict[str, Any], *, wait: float, trigger: str = "chat") -> RunRecord:
        """Save and start the current workflow; wait up to `wait` seconds for it to settle."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow to run yet; describe one or use /new")
        version = self.flow.save_workflow(current.source)
        run = self.flow.submit(version, inputs, trigger=trigger)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.flow.executor.wait_for(run.id, statuses=SETTLED), wait)
        return self.flow.store.get_run(run.id) or run


def _apply(data: Any, operation: dict[str, Any]) -> None:
    op = operation.get("op", "set")
    path = str(operation.get("path", ""))
    keys = [key for key in path.split(".") if key]
    if not keys:
        raise PatchError(f"operation {operation!r} needs a dotted `path` such as spec.nodes.draft.prompt")
    target = data
    for key in keys[:-1]:
        if isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        elif isinstance(target, dict):
            target = target.setdefault(key, {}) if op == "set" else target.get(key)
        else:
            raise PatchError(f"path '{path}': '{key}' is not a mapping or list index here")
        if target is None:
            raise PatchError(f"path '{path}' does not exist")
    last = keys[-1]
    if op == "set":
        if "value" not in operation:
            raise PatchError(f"set '{path}' needs a `value`")
        if isinstance(target, list) and last.isdigit():
            index = int(last)
            if index < len(target):
                target[index] = operation["value"]
            else:
                target.append(operation["value"])
        elif isinstance(target, dict):
            target[last] = operation["value"]
        else:
            raise PatchError(f"path '{path}': cannot set a key inside a {type(target).__name__}")
    elif op == "delete":
        if isinstance(target, dict) and last in target:
            del target[last]
        elif isinstance(target, list) and last.isdigit() and int(last) < len(target):
            del target[int(last)]
        else:
            raise PatchError(f"path '{path}' does not exist")
    else:
        raise PatchError(f"unknown op '{op}'; use set or delete")
