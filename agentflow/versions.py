"""A workflow's versions as people name them: v1, v2, … per workflow, in the order first saved.

A version is what the store keeps under a workflow's name (`WorkflowVersion`): its content hash
(`version`, 12 hex digits) is the stable id, its number is what people read and type. The edits of
a chat conversation are *drafts* (`chat/history.py`), numbered per conversation, until saved or run.
Every message that says "version" means a stored one. See docs/versions.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentflow.chat.history import unified_diff
from agentflow.store.base import WorkflowStore, WorkflowVersion

_NUMBER = re.compile(r"[vV]?(\d{1,6})")
MIN_ID_PREFIX = 4


class UnknownVersionError(LookupError):
    """A workflow or version that is not stored; the message lists what is."""


@dataclass(frozen=True, slots=True)
class VersionRef:
    """A stored version, named without its source (what a reply or a link carries)."""

    workflow: str
    number: int
    version: str  # the content hash

    @classmethod
    def of(cls, stored: WorkflowVersion) -> VersionRef:
        return cls(stored.name, stored.number, stored.version)

    @property
    def label(self) -> str:
        return f"v{self.number}" if self.number else self.version

    @property
    def title(self) -> str:
        return f"'{self.workflow}' {self.label}"


def label(stored: WorkflowVersion) -> str:
    """`v2`; the content hash for a version stored before numbers existed and never renumbered."""
    return VersionRef.of(stored).label


def title(stored: WorkflowVersion) -> str:
    """`'greeter' v2`, as sentences name a version."""
    return VersionRef.of(stored).title


def listing(versions: list[WorkflowVersion], *, limit: int = 8) -> str:
    shown = ", ".join(label(stored) for stored in versions[:limit])
    return shown + (f" and {len(versions) - limit} older" if len(versions) > limit else "")


def resolve(store: WorkflowStore, name: str, ref: str | None = None) -> WorkflowVersion:
    """The version `ref` names: `v2` (or `2`), a content hash or a prefix of one; the current one when empty."""
    ref = (ref or "").strip()
    if not ref:
        current = store.get_workflow(name)
        if current is None:
            raise UnknownVersionError(missing(store, name))
        return current
    exact = store.get_workflow(name, ref)
    if exact is not None:
        return exact
    versions = store.list_versions(name)
    if not versions:
        raise UnknownVersionError(missing(store, name))
    number = _NUMBER.fullmatch(ref)
    if number is not None:
        found = [stored for stored in versions if stored.number == int(number.group(1))]
        if found:
            return found[0]
    matches = [stored for stored in versions if len(ref) >= MIN_ID_PREFIX and stored.version.startswith(ref.lower())]
    if len(matches) == 1:
        return matches[0]
    what = "several versions start with" if matches else "no version"
    raise UnknownVersionError(
        f"'{name}' has {what} '{ref}'; its versions, newest first: {listing(versions)} "
        f"(name one as v2, or by at least {MIN_ID_PREFIX} characters of its id)"
    )


def missing(store: WorkflowStore, name: str) -> str:
    """What to say of a workflow name that is not saved."""
    names = [stored.name for stored in store.list_workflows()]
    saved = ", ".join(names[:8]) if names else "none yet (save one with /save NAME in the chat)"
    return f"there is no saved workflow '{name}'; saved workflows: {saved}"


def diff(before: WorkflowVersion, after: WorkflowVersion) -> str:
    """A unified diff from one version's YAML to another's, labelled `greeter v1` and `greeter v2`."""
    return unified_diff(
        before.source,
        after.source,
        before_label=f"{before.name} {label(before)}",
        after_label=f"{after.name} {label(after)}",
    )
