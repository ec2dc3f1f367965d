"""What a node may use: a typed run context, never globals."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentflow.engine.budget import Meter
from agentflow.engine.events import RunEvent
from agentflow.secrets import redact
from agentflow.settings import Settings
from agentflow.spec.graph import Graph
from agentflow.spec.models import Workflow

if TYPE_CHECKING:
    from agentflow.llm.client import LLMClient
    from agentflow.observability.costs import Ledger
    from agentflow.tools.registry import ToolContext, ToolRegistry
    from agentflow.trust.capabilities import Capabilities
    from agentflow.trust.egress import EgressPolicy
    from agentflow.trust.grants import Grants


@dataclass
class Services:
    """Process-wide dependencies shared by every run."""

    settings: Settings
    tools: ToolRegistry
    flush: Callable[[], Awaitable[None]]
    secrets: Mapping[str, str]
    """The operator's secrets by name (`agentflow.trust.secrets`): all that `${env:NAME}` can reach."""
    grants: Grants
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    """The process environment, for detecting providers only: workflows never read it."""
    llm_factory: Callable[[Settings], LLMClient] | None = None
    ledger: Ledger | None = None
    _llm: LLMClient | None = None
    _detected: list[str | None] = field(default_factory=list)

    def default_model(self) -> str | None:
        """AGENTFLOW_MODEL, else the first provider detected on this machine (probed once)."""
        if self.settings.model:
            return self.settings.model
        if not self._detected:
            from agentflow.providers import default_model

            self._detected.append(default_model(self.environ))
        return self._detected[0]

    @property
    def llm(self) -> LLMClient:
        # litellm is imported only when a run first needs a model.
        if self._llm is None:
            if self.llm_factory is None:
                from agentflow.llm.client import LLMClient

                self._llm = LLMClient(self.settings)
            else:
                self._llm = self.llm_factory(self.settings)
        return self._llm


@dataclass
class RunContext:
    run_id: str
    workflow: Workflow
    graph: Graph
    services: Services
    emit: Callable[[RunEvent], None]
    meter: Meter
    allowed: Capabilities
    """What this run may use: its version's capabilities, checked against the grant when the run (re)started."""
    egress: EgressPolicy
    secrets: set[str] = field(default_factory=set)
    _limits: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def map_limit(self, node_id: str, concurrency: int) -> asyncio.Semaphore:
        if node_id not in self._limits:
            self._limits[node_id] = asyncio.Semaphore(concurrency)
        return self._limits[node_id]

    def check_tool(self, name: str) -> None:
        """Refuse a tool outside the grant, whatever the YAML says (pure tools need no grant)."""
        from agentflow.tools.registry import ToolError

        tool = self.services.tools.get(name)
        if not tool.pure and name not in self.allowed.tools:
            raise ToolError(
                f"tool '{name}' is not granted to workflow '{self.workflow.name}'; "
                f"a person must grant a version that uses it (agentflow grant {self.workflow.name})"
            )

    def secret(self, name: str) -> str:
        """A granted secret's value, remembered for redaction; MissingSecret when refused or unset."""
        from agentflow.spec.expressions import MissingSecret

        if name not in self.allowed.secrets:
            raise MissingSecret(
                name,
                f"secret {name} is not granted to workflow '{self.workflow.name}'; "
                f"a person must grant a version that uses it (agentflow grant {self.workflow.name})",
            )
        if name not in self.services.secrets:
            why = getattr(self.services.secrets, "why_missing", None)
            raise MissingSecret(name, why(name) if why else None)
        value = self.services.secrets[name]
        self.secrets.add(value)
        return value

    def tool_context(self, node_id: str) -> ToolContext:
        from agentflow.tools.registry import ToolContext

        return ToolContext(run_id=self.run_id, node_id=node_id, egress=self.egress)

    def redact(self, value: Any) -> Any:
        """Replace every resolved secret in strings nested in `value` by ***."""
        return redact(value, self.secrets)
