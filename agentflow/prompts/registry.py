"""The MLflow prompt registry at the app's tracking URI: load (with a short cache), register, alias, list.

MLflow is imported when a registry is first used, never at import: agent processes and runs without
registry prompts do not pay for it. Every call blocks (SQLite or HTTP): the engine calls `load` in a
thread. A client of our own (`MlflowClient(tracking_uri=...)`) rather than `mlflow.genai.load_prompt`
keeps the process-wide tracking URI untouched and our own cache in charge of how soon an alias move shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow.prompts.refs import PromptRef

CACHE_SECONDS = 5.0
"""How long a loaded prompt is reused: an alias moved in the registry reaches runs started after this."""


class PromptNotFound(LookupError):
    """The registry has no such prompt, version or alias; the message says how to push one."""


@dataclass(frozen=True, slots=True)
class LoadedPrompt:
    """A registry prompt's version as a run uses it."""

    name: str
    version: int
    template: str
    aliases: tuple[str, ...] = ()
    commit_message: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`triage.classify@3`: the name and the version number a call used."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class PromptSummary:
    """One registered prompt: its newest version and where its aliases point."""

    name: str
    latest: int | None
    aliases: dict[str, int]
    tags: dict[str, str]


def tracking_uri_for(home: Path) -> str:
    """The app's MLflow tracking URI (MLFLOW_TRACKING_URI, else the SQLite store in the data directory)."""
    from agentflow.observability.tracer import TraceSettings

    return TraceSettings.from_env(home).tracking_uri


class PromptRegistry:
    """MLflow's prompt registry at one tracking URI; thread-safe; `clock` is injectable for the cache."""

    def __init__(
        self, tracking_uri: str, *, cache_seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tracking_uri = tracking_uri
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._client: Any = None
        self._cache: dict[tuple[str, str], tuple[float, LoadedPrompt]] = {}

    @classmethod
    def for_home(cls, home: Path) -> PromptRegistry:
        return cls(tracking_uri_for(home))

    def client(self) -> Any:
        # One client, made once: creating the SQLite store the first time runs MLflow's migrations.
        with self._lock:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return self._client

    # -- reading ---------------------------------------------------------------------------------

    def load(self, ref: PromptRef, *, fresh: bool = False) -> LoadedPrompt:
        """The prompt a reference names now (from the cache if loaded in the last `cache_seconds`, unless `fresh`)."""
        key = (ref.name, ref.selector)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now < cached[0] and not fresh:
            return cached[1]
        loaded = self._fetch(ref)
        with self._lock:
            self._cache[key] = (now + self.cache_seconds, loaded)
        return loaded

    def _fetch(self, ref: PromptRef) -> LoadedPrompt:
        from mlflow.exceptions import MlflowException

        try:
            version = self.client().load_prompt(ref.uri, cache_ttl_seconds=0)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise PromptNotFound(self._missing(ref)) from None
            raise
        if version is None:
            raise PromptNotFound(self._missing(ref))
        return _loaded(version)

    def _missing(self, ref: PromptRef) -> str:
        what = f"alias '{ref.alias}'" if ref.alias else f"version {ref.version}"
        return (
            f"{ref.uri}: the prompt registry at {self.tracking_uri} has no prompt '{ref.name}' with {what}; "
            f"push it with `agentflow prompts push WORKFLOW_FILE --alias {ref.alias or 'production'}` "
            f"(or see what exists with `agentflow prompts list`)"
        )

    def list(self) -> list[PromptSummary]:
        """Every registered prompt, by name."""
        client = self.client()
        summaries = []
        for prompt in client.search_prompts():
            numbers = [int(version.version) for version in client.search_prompt_versions(prompt.name)]
            # A search leaves aliases out; each version read alone has them.
            versions = [client.get_prompt_version(prompt.name, number) for number in numbers]
            aliases = {alias: int(version.version) for version in versions for alias in version.aliases or ()}
            tags = {key: value for key, value in (prompt.tags or {}).items() if not key.startswith("_mlflow")}
            summaries.append(PromptSummary(prompt.name, max(numbers, default=None), aliases, tags))
        return sorted(summaries, key=lambda summary: summary.name)

    # -- writing ---------------------------------------------------------------------------------

    def register(self, name: str, template: str, *, message: str, tags: dict[str, str]) -> LoadedPrompt:
        """A new version of `name` (the prompt is created with its first version)."""
        version = self.client().register_prompt(name=name, template=template, commit_message=message, tags=tags)
        return _loaded(version)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client().set_prompt_alias(name=name, alias=alias, version=version)
        with self._lock:
            self._cache.pop((name, f"@{alias}"), None)  # this process sees its own move at once


def _loaded(version: Any) -> LoadedPrompt:
    template = version.template
    if not isinstance(template, str):
        raise PromptNotFound(
            f"prompt '{version.name}' version {version.version} is a chat prompt (a list of messages); "
            "a node's prompt field takes a text prompt: register the text with `agentflow prompts push`"
        )
    return LoadedPrompt(
        name=version.name,
        version=int(version.version),
        template=template,
        aliases=tuple(version.aliases or ()),
        commit_message=version.commit_message,
        tags={key: value for key, value in (version.tags or {}).items() if not key.startswith("_mlflow")},
    )
