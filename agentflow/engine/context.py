"""What a node may use: a typed run context, never globals."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentflow.engine.budget import Meter
from agentflow.engine.events import RunEvent
from agentflow.secrets import redact
from agentflow.settings import Settings
from agentflow.spec.graph import Graph
from agentflow.spec.models import Workflow
from agentflow.store.base import RunRecord, RunStore, WorkflowStore

if TYPE_CHECKING:
    from agentflow.llm.client import LLMClient
    from agentflow.memory.base import MemoryStore
    from agentflow.memory.embeddings import Embedder
    from agentflow.observability.costs import Ledger
    from agentflow.prompts.registry import PromptRegistry
    from agentflow.registry import Registry
    from agentflow.tools.registry import ToolContext, ToolRegistry
    from agentflow.trust.capabilities import Capabilities
    from agentflow.trust.egress import EgressPolicy
    from agentflow.trust.grants import Grants


class ChildRuns(Protocol):
    """What a `workflow` node needs to start a sub-workflow's run and see it to its end (the executor)."""

    @property
    def store(self) -> ChildStore: ...

    def prepare(
        self,
        name: str,
        version: str,
        inputs: dict[str, Any],
        *,
        trigger: str = "manual",
        reply_to: dict[str, Any] | None = None,
    ) -> RunRecord: ...

    async def run_child(self, run_id: str, *, parent_id: str) -> RunRecord: ...


class ChildStore(RunStore, WorkflowStore, Protocol):
    """The runs and workflow versions a `workflow` node reads and records."""


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
    memory: MemoryStore | None = None
    """Where workflows remember across runs (None: memory is off, and a node that uses it says so)."""
    embedder: Embedder | None = None
    """Embeddings for vector recall (AGENTFLOW_EMBEDDING_MODEL); None: keyword recall only."""
    registry: Registry | None = None
    """The live agent registry (agentflow/registry/): the A2A agents `remote` nodes may call."""
    runs: ChildRuns | None = None
    """Starts sub-workflows' runs (the executor; None: `workflow` nodes cannot run here, and say so)."""
    prompt_registry: PromptRegistry | None = None
    """MLflow's prompt registry, for `prompts:/` prompts; None: opened at first use at the app's tracking URI."""
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
    def prompts(self) -> PromptRegistry:
        if self.prompt_registry is None:
            from agentflow.prompts.registry import PromptRegistry

            self.prompt_registry = PromptRegistry.for_home(self.settings.home)
        return self.prompt_registry

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
    source_path: str | None = None
    """The workflow file this version was saved from, when it came from one."""
    secrets: set[str] = field(default_factory=set)
    person: str = "local"
    """Who started the run, for `user` memory: `telegram:42`, `whatsapp:+1555...`; `local` for this machine."""
    session: str | None = None
    """The chat it came from, for `session` memory (`telegram:42`); None: the run is its own session."""
    pinned: dict[str, Any] = field(default_factory=dict)
    """Node id -> the output it answers with, without running (agentflow/engine/pins.py)."""
    variants: dict[str, str] = field(default_factory=dict)
    """Node id -> the variant this run must use (`overrides["variants"]`); other nodes draw theirs
    (agentflow/engine/variant_draw.py)."""
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

    def check_code(self) -> None:
        """Refuse to run code unless a person granted this workflow code execution."""
        from agentflow.engine.nodes.base import NodeConfigError

        if not self.allowed.code:
            raise NodeConfigError(
                f"workflow '{self.workflow.name}' is not granted code execution; a person must grant a version "
                f"that runs code (agentflow grant {self.workflow.name})"
            )

    @property
    def workspace(self) -> Path:
        """The workflow's own file workspace (AGENTFLOW_HOME/workspaces/<workflow>), shared by its runs."""
        return self.services.settings.workspaces / self.workflow.name

    def tool_context(self, node_id: str) -> ToolContext:
        from agentflow.tools.registry import ToolContext

        return ToolContext(
            run_id=self.run_id,
            node_id=node_id,
            egress=self.egress,
            workflow=self.workflow.name,
            workspace=self.workspace,
            secret=self.tool_secret,
            settings=self.services.settings,
            memory=self.memory_access(node_id),
        )

    def memory_access(self, node_id: str) -> Any:
        from agentflow.engine.memory import MemoryAccess

        return MemoryAccess(self, node_id) if self.services.memory is not None else None

    def tool_secret(self, name: str) -> str:
        """A secret a tool names (sql_query's `database`...): granted ones only, refused as a ToolError."""
        from agentflow.spec.expressions import MissingSecret
        from agentflow.tools.registry import ToolError

        try:
            return self.secret(name)
        except MissingSecret as exc:
            raise ToolError(exc.reason) from None

    def redact(self, value: Any) -> Any:
        """Replace every resolved secret in strings nested in `value` by ***."""
        return redact(value, self.secrets)
