"""The memory store's contract: items in named scopes, searched by keywords and (optionally) vectors.

A scope's name says whose it is: `workflow:triage`, `agent:triage/answer`, `user:triage/telegram:42`,
`session:triage/telegram:42`, or `global`. Every implementation passes tests/integration/test_memory_store.py.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

SCOPE_KINDS = ("workflow", "agent", "user", "session", "global")
_KEY = re.compile(r"^[A-Za-z0-9_.:@+/-]{1,200}$")
MAX_TEXT = 20_000
MAX_TAGS = 20


class MemoryNotFound(KeyError):
    """No memory has that id (it was deleted, expired or never existed)."""


def scope_name(kind: str, key: str = "") -> str:
    """The stored name of a scope; ValueError with the fix on a bad kind or key."""
    if kind not in SCOPE_KINDS:
        raise ValueError(f"unknown memory scope {kind!r}; use one of {', '.join(SCOPE_KINDS)}")
    if kind == "global":
        if key:
            raise ValueError("the global scope has no key: write just 'global'")
        return "global"
    if not _KEY.match(key):
        raise ValueError(
            f"memory scope key {key!r} must be 1-200 letters, digits or . _ : @ + / - (e.g. workflow:triage)"
        )
    return f"{kind}:{key}"


def parse_scope(name: str) -> tuple[str, str]:
    """(kind, key) of a stored scope name; ValueError on anything else."""
    if name == "global":
        return "global", ""
    kind, _, key = name.partition(":")
    scope_name(kind, key)  # checks both
    if kind == "global":
        raise ValueError("the global scope has no key: write just 'global'")
    return kind, key


@dataclass(frozen=True, slots=True)
class MemoryItem:
    id: str
    scope: str
    text: str
    data: dict[str, Any] | None
    tags: tuple[str, ...]
    importance: float
    source_run: str | None
    created_at: float
    updated_at: float
    expires_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tags": list(self.tags)}


@dataclass(frozen=True, slots=True)
class MemoryHit:
    item: MemoryItem
    score: float
    keyword_rank: int | None
    """1-based rank among the keyword matches; None when keywords did not find it."""
    vector_rank: int | None


def check_item(text: str, tags: Sequence[str], importance: float) -> None:
    """The rules every implementation applies before writing."""
    if not text.strip():
        raise ValueError("a memory needs some text")
    if len(text) > MAX_TEXT:
        raise ValueError(f"a memory holds at most {MAX_TEXT} characters; this one has {len(text)}: keep the gist")
    if not 0 <= importance <= 1:
        raise ValueError(f"importance is between 0 and 1 (got {importance})")
    if len(tags) > MAX_TAGS or any(not isinstance(tag, str) or not tag.strip() or len(tag) > 64 for tag in tags):
        raise ValueError(f"tags: at most {MAX_TAGS}, each 1-64 characters")


class MemoryStore(Protocol):
    def add(
        self,
        scope: str,
        text: str,
        *,
        data: dict[str, Any] | None = None,
        tags: Sequence[str] = (),
        importance: float = 0.5,
        source_run: str | None = None,
        ttl_s: float | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> MemoryItem: ...

    def update(
        self,
        item_id: str,
        *,
        text: str | None = None,
        data: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        importance: float | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> MemoryItem:
        """MemoryNotFound when there is no such memory. A new text without an embedding drops the old one."""
        ...

    def get(self, item_id: str) -> MemoryItem | None: ...

    def delete(self, item_id: str) -> bool: ...

    def forget(self, scope: str) -> int:
        """Delete a whole scope; how many memories went."""
        ...

    def list(self, scope: str | None = None, *, limit: int = 100, offset: int = 0) -> builtins.list[MemoryItem]:
        """Newest first; expired memories never."""
        ...

    def scopes(self) -> builtins.list[tuple[str, int]]:
        """(scope, live memories), by name."""
        ...

    def search(
        self,
        scopes: Sequence[str],
        query: str,
        *,
        k: int = 5,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
        now: float | None = None,
    ) -> builtins.list[MemoryHit]: ...

    def purge_expired(self, now: float | None = None) -> int: ...

    def close(self) -> None: ...
