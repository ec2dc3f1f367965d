"""A session's workflow: propose (validated) edits, patch by path, save, run.

The session's accepted edits are its *drafts*; saving (or running, or granting) stores the current
draft as a version of its workflow, numbered v1, v2, … per workflow (agentflow/versions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentflow.chat.history import ChatHistory, ConfigVersion
from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.runtime import AgentFlow
from agentflow.spec.errors import SpecError, SpecErrors
from agentflow.spec.models import Workflow
from agentflow.store.base import GrantRecord, RunRecord, WorkflowVersion
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
        """Validate `source`; only a valid workflow becomes the session's new draft.

        `granted_by`: a person wrote this edit themselves, so what the edit adds is granted by them
        (never what an earlier, unreviewed draft of the assistant had already added).
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
        """The current draft's capabilities against its workflow's grant (None without a valid one)."""
        current = self.current
        workflow = self.validate(current.source).workflow if current is not None else None
        if workflow is None or current is None:
            return None
        return self.flow.grants.review(workflow, content_hash(current.source))

    def grant(self, *, by: str) -> GrantRecord | None:
        """A person grants what the current draft needs; it is stored, so the grant names a real version."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow to grant yet")
        stored = self.flow.save_workflow(current.source)
        return self.flow.grant_version(stored, by=by, note="granted in the chat")

    def renamed(self, name: str) -> str:
        """The current YAML with `metadata.name` set in the text itself: the rest stays as written."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow yet to name; write one first")
        return set_scalar(current.source, ("metadata", "name"), name)

    def stored(self) -> WorkflowVersion | None:
        """The stored version whose text is the current draft's, under its name (None until saved)."""
        current = self.current
        workflow = self.validate(current.source).workflow if current is not None else None
        if workflow is None or current is None:
            return None
        return self.flow.store.get_workflow(workflow.name, content_hash(current.source))

    def patched(self, operations: list[dict[str, Any]]) -> str:
        """The current YAML with set/delete operations applied to dotted paths."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow yet to patch; write one first")
        data = yaml.safe_load(current.source)
        for operation in operations:
            _apply(data, operation)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)

    def save(self) -> WorkflowVersion:
        """Store the current draft as a version of its workflow (the key is metadata.name)."""
        current = self.current
        if current is None:
            raise PatchError("there is no workflow to save yet")
        return self.flow.save_workflow(current.source)

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


def set_scalar(source: str, path: tuple[str, ...], value: str) -> str:
    """`source` with the string at `path` (mapping keys) replaced or added in the text itself.

    Everything else (comments, key order, quoting, blank lines) stays as the person wrote it: the
    value's place comes from the YAML parser's marks, and the result is checked by loading it again.
    """
    try:
        node: yaml.Node | None = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise PatchError(f"the YAML does not parse ({exc}); fix it first") from None
    for depth, key in enumerate(path):
        dotted = ".".join(path[: depth + 1])
        if not isinstance(node, yaml.MappingNode):
            raise PatchError(f"'{'.'.join(path[:depth]) or 'the document'}' is not a mapping; cannot set '{dotted}'")
        entry = next(
            (pair for pair in node.value if isinstance(pair[0], yaml.ScalarNode) and pair[0].value == key), None
        )
        if entry is None:
            if depth < len(path) - 1:
                raise PatchError(f"'{dotted}' is not in the workflow; add it in the YAML first")
            return _first_holding(
                [_insert(source, node, key, _scalar(value, style)) for style in (None, '"')], path, value
            )
        key_node, node = entry
    assert node is not None
    if not isinstance(node, yaml.ScalarNode) or node.start_mark.index < key_node.end_mark.index:
        raise PatchError(f"'{'.'.join(path)}' is not a plain value in the YAML (an alias?); write it out and retry")
    start, end = node.start_mark.index, node.end_mark.index
    written = source[start:end]
    # Keep an anchor or a tag written before the value (`name: &n old`): aliases still point at it.
    properties = _PROPERTIES.match(written)
    start += properties.end() if properties else 0
    trailing = written[len(written.rstrip("\r\n")) :] if node.style in ("|", ">") else ""
    styles = dict.fromkeys((node.style, '"'))
    return _first_holding(
        [source[:start] + _scalar(value, style) + trailing + source[end:] for style in styles], path, value
    )


_PROPERTIES = re.compile(r"(?:[&!]\S*\s+)+")


def _scalar(value: str, style: str | None) -> str:
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style is None:
        return value
    return json.dumps(value, ensure_ascii=False)  # JSON strings are YAML double-quoted scalars


def _insert(source: str, mapping: yaml.MappingNode, key: str, value: str) -> str:
    """Add `key: value` (value as written) as the mapping's first entry, indented or inline like the others."""
    rendered = f"{key}: {value}"
    if mapping.flow_style or not mapping.value:
        at = source.index("{", mapping.start_mark.index) + 1
        return source[:at] + rendered + (", " if mapping.value else "") + source[at:]
    # Before the first key, at its column: right whether the key starts its line or follows a `- `.
    first = mapping.value[0][0].start_mark
    newline = "\r\n" if "\r\n" in source else "\n"
    return source[: first.index] + rendered + newline + " " * first.column + source[first.index :]


def _first_holding(candidates: list[str], path: tuple[str, ...], value: str) -> str:
    """The first edited text that loads with `value` at `path` (a plain scalar may read as a number, or end a
    flow mapping early: then it is quoted)."""
    for candidate in candidates:
        try:
            data: Any = yaml.safe_load(candidate)
            for key in path:
                data = data[key]
        except (yaml.YAMLError, KeyError, TypeError):
            continue
        if data == value:
            return candidate
    raise PatchError(f"could not write '{value}' at '{'.'.join(path)}' in the YAML; edit it there by hand")
