"""Assembly of one AgentFlow process: store, event bus, engine and executor."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow.engine.context import Services
from agentflow.engine.events import EventBus
from agentflow.engine.executor import Executor
from agentflow.engine.feed import LiveFeed
from agentflow.engine.runner import Engine
from agentflow.observability.costs import Ledger
from agentflow.secrets import MIN_REDACTED_CHARS
from agentflow.settings import Settings
from agentflow.spec.errors import SpecError, SpecErrors
from agentflow.spec.loader import MAX_FILE_BYTES
from agentflow.spec.models import Workflow
from agentflow.spec.validate import load_workflow
from agentflow.store import open_store
from agentflow.store.base import GrantRecord, RunRecord, Store, WorkflowVersion
from agentflow.tools.registry import ToolRegistry, builtin_registry
from agentflow.trust.grants import Grants, Review
from agentflow.trust.secrets import MIN_SECRET_CHARS, OperatorSecrets

if TYPE_CHECKING:
    from agentflow.observability.exporter import TraceExporter
    from agentflow.triggers.deployments import Deployments


log = logging.getLogger("agentflow")


def _warn_short_secrets(settings: Settings, secrets: OperatorSecrets) -> None:
    """Values too short to redact safely: said once at start, where the operator looks."""
    short = secrets.short_names()
    if short:
        log.warning(
            "secrets shorter than %d characters are refused (too short to redact): %s; give them longer values",
            MIN_SECRET_CHARS,
            ", ".join(short),
        )
    if settings.api_key and len(settings.api_key) < MIN_REDACTED_CHARS:
        log.warning(
            "AGENTFLOW_API_KEY is shorter than %d characters, so it is not redacted from traces; "
            "if it is a real key, it is stored as is",
            MIN_REDACTED_CHARS,
        )


@dataclass
class AgentFlow:
    settings: Settings
    store: Store
    bus: EventBus
    engine: Engine
    executor: Executor
    exporter: TraceExporter | None = None
    feed: LiveFeed = field(init=False)
    """Committed events for live readers (the UI, the streaming API); started by the server."""
    _unwatch: Callable[[], None] | None = None
    _deployments: Deployments | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.feed = LiveFeed(self.store, self.bus)

    @property
    def deployments(self) -> Deployments:
        """Which version each workflow's triggers fire (agentflow/triggers/deployments.py)."""
        if self._deployments is None:
            from agentflow.triggers.deployments import Deployments

            self._deployments = Deployments(self)
        return self._deployments

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        tools: ToolRegistry | None = None,
        llm_factory: Any = None,
        tracing: bool = False,
    ) -> AgentFlow:
        """One process's AgentFlow. With `tracing`, finished runs (and any backlog) are exported to MLflow."""
        settings = settings or Settings.from_env()
        store = open_store(settings)
        bus = EventBus()
        bus.subscribe(store.record)
        registry = tools or builtin_registry(settings)
        secrets = OperatorSecrets(settings.home)
        services = Services(
            settings=settings,
            tools=registry,
            flush=store.flush,
            secrets=secrets,
            grants=Grants(store, registry),
            llm_factory=llm_factory,
        )
        services.ledger = Ledger(store, global_daily_usd=settings.daily_budget_usd)
        from agentflow.memory.embeddings import Embedder
        from agentflow.memory.open import open_memory

        services.memory = open_memory(settings)
        services.embedder = Embedder.from_settings(settings)
        from agentflow.registry import Registry

        services.registry = Registry(store, settings)
        _warn_short_secrets(settings, secrets)
        engine = Engine(store, services, bus)
        executor = Executor(
            engine, concurrency=settings.max_concurrent_runs, heartbeat_seconds=settings.worker_heartbeat_s
        )
        flow = cls(settings, store, bus, engine, executor)
        # Changes other processes make to runs (a worker executing one, a cancel from the API) reach our bus.
        flow._unwatch = store.watch_changes(bus.changed)
        if tracing:
            from agentflow.observability import attach_tracing

            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline-first: MLflow must not phone home
            flow.exporter = attach_tracing(flow)
        return flow

    @property
    def grants(self) -> Grants:
        return self.engine.services.grants

    def load(self, source: str | bytes, path: str = "<workflow>") -> Workflow:
        """Validate a workflow against this process's tools and stored workflows (raises SpecErrors)."""
        from agentflow.engine.nodes.workflow import StoredWorkflows

        tools = self.engine.services.tools
        return load_workflow(
            source,
            path,
            known_tools=tools.known_names(),
            network_tools=tools.network_names(),
            workflows=StoredWorkflows(self.store),
        )

    def save_workflow(self, source: str, *, path: str | None = None) -> WorkflowVersion:
        """Validate a workflow and store it as a new version (nothing is saved when invalid).

        Saving grants nothing: a version that widens what its workflow may do waits for
        a person (`grant_version`), who may be the author saving their own file.
        """
        workflow = self.load(source, path or "<workflow>")
        # Text ends with a line break, as the chat keeps it: the same YAML is the same version from anywhere.
        source = source if source.endswith("\n") else source + "\n"
        return self.store.save_workflow(workflow.name, source, path=path)

    def review(self, stored: WorkflowVersion) -> Review:
        """A stored version's capabilities against its workflow's grant."""
        return self.grants.review(self.engine.compiled(stored.name, stored.version).workflow, stored.version)

    def grant_version(self, stored: WorkflowVersion, *, by: str, note: str = "") -> GrantRecord | None:
        """A person grants what a stored version needs; None when nothing was missing."""
        workflow = self.engine.compiled(stored.name, stored.version).workflow
        return self.grants.grant(workflow, stored.version, by=by, note=note)

    def save_workflow_file(self, path: str | Path) -> WorkflowVersion:
        name = str(path)
        try:
            if Path(path).stat().st_size > MAX_FILE_BYTES:
                raise SpecErrors([SpecError(name, 1, 1, f"the file is larger than {MAX_FILE_BYTES} bytes; split it")])
            source = Path(path).read_bytes()[: MAX_FILE_BYTES + 1].decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecErrors([SpecError(name, 1, 1, f"the file is not UTF-8 text ({exc.reason})")]) from None
        return self.save_workflow(source, path=name)

    def submit(
        self,
        version: WorkflowVersion,
        inputs: dict[str, Any],
        *,
        trigger: str = "manual",
        overrides: dict[str, Any] | None = None,
    ) -> RunRecord:
        return self.executor.submit(version.name, version.version, inputs, trigger=trigger, overrides=overrides)

    def close(self) -> None:
        from agentflow.tools.operator import close_operator_tools

        close_operator_tools(self.engine.services.tools)
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self.exporter is not None:
            self.exporter.close()  # tries the pending traces once more; the rest wait for the next start
            self.exporter = None
        if self.engine.services.memory is not None:
            self.engine.services.memory.close()
        self.store.close()
