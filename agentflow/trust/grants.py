"""Grants: a person's yes to what a workflow may reach. Versions beyond the grant wait for review.

A workflow's grant is the union of everything people granted it, recorded with
who and when (the store keeps every grant; the newest is in force). A version
whose capabilities go beyond it is *needs review*: valid, visible, diffable,
but it cannot run from anywhere until a person grants it. Who is a person is
decided at the edges (the CLI, the web login, the API token, a person's slash
command); the assistant's tools never reach `grant`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentflow.store.base import GrantRecord, GrantStore
from agentflow.trust.capabilities import Capabilities, derive

if TYPE_CHECKING:
    from agentflow.spec.models import Workflow
    from agentflow.tools.registry import ToolRegistry


@dataclass(frozen=True, slots=True)
class Review:
    """A version's capabilities against its workflow's grant."""

    workflow: str
    version: str | None
    wanted: Capabilities
    granted: Capabilities

    @property
    def missing(self) -> Capabilities:
        return self.wanted.beyond(self.granted)

    @property
    def needs_review(self) -> bool:
        return bool(self.missing)

    def how_to_grant(self) -> str:
        version = f" --version {self.version}" if self.version else ""
        return (
            f"a person grants it with the Grant button in the Chat tab, `agentflow grant {self.workflow}{version}`, "
            f"or POST /api/workflows/{self.workflow}/grant"
        )

    def message(self) -> str:
        version = f" version {self.version}" if self.version else ""
        return (
            f"workflow '{self.workflow}'{version} needs a person's grant before it can run: "
            f"{self.missing.describe()}; {self.how_to_grant()}"
        )


class NeedsGrantError(PermissionError):
    """A run was asked of a version whose capabilities go beyond its workflow's grant."""

    def __init__(self, review: Review) -> None:
        super().__init__(review.message())
        self.review = review


class Grants:
    def __init__(self, store: GrantStore, tools: ToolRegistry | None = None) -> None:
        self.store = store
        self.tools = tools

    def capabilities(self, workflow: Workflow) -> Capabilities:
        return derive(workflow, self.tools)

    def granted(self, name: str) -> Capabilities:
        latest = self.store.latest_grant(name)
        return Capabilities.from_dict(latest.capabilities) if latest else Capabilities()

    def review(self, workflow: Workflow, version: str | None = None) -> Review:
        return Review(workflow.name, version, self.capabilities(workflow), self.granted(workflow.name))

    def require(self, workflow: Workflow, version: str | None = None) -> Capabilities:
        """The version's capabilities when granted; NeedsGrantError otherwise."""
        review = self.review(workflow, version)
        if review.needs_review:
            raise NeedsGrantError(review)
        return review.wanted

    def grant(self, workflow: Workflow, version: str | None, *, by: str, note: str = "") -> GrantRecord | None:
        """A person grants everything this version needs; None when it was already granted."""
        return self.extend(workflow.name, version, self.capabilities(workflow), by=by, note=note)

    def grant_edit(
        self, workflow: Workflow, version: str | None, before: Workflow | None, *, by: str
    ) -> GrantRecord | None:
        """A person's own edit grants what the edit itself added (not what an earlier, unreviewed version had)."""
        added = self.capabilities(workflow) - (self.capabilities(before) if before is not None else Capabilities())
        return self.extend(workflow.name, version, added, by=by, note="the person's own edit")

    def extend(
        self, name: str, version: str | None, capabilities: Capabilities, *, by: str, note: str = ""
    ) -> GrantRecord | None:
        granted = self.granted(name)
        if not capabilities.beyond(granted):
            return None
        combined = granted | capabilities
        return self.store.record_grant(name, version, combined.to_dict(), granted_by=by, note=note)

    def revoke(self, name: str, *, by: str) -> GrantRecord:
        """Withdraw everything granted: every version that needs anything waits for review again."""
        return self.store.record_grant(name, None, Capabilities().to_dict(), granted_by=by, note="revoked")
