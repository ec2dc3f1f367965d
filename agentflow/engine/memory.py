"""A run's memory: what `llm` and `agent` nodes recall before they run and save after they succeed.

Every read and write is an event (`memory_recall`, `memory_write`), so it shows in the run console and
the trace. A workflow reaches only its own scopes — `workflow:<name>`, `agent:<name>/<node>`,
`user:<name>/<person>`, `session:<name>/<chat>` — and `global` only when a person granted it. What is
saved is redacted first: no secret value the run resolved, nor any operator secret, lands in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import MemoryRecalled, MemoryWritten
from agentflow.engine.nodes.base import NodeConfigError
from agentflow.secrets import redact
from agentflow.spec.expressions import render
from agentflow.spec.memory import SHARED_SCOPES, AutoSave, MemoryConfig, Recall, Save
from agentflow.spec.models import parse_duration

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext
    from agentflow.memory.base import MemoryHit, MemoryStore

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
"""A token budget in characters: close enough for English prose, and never needs a tokenizer."""
MAX_SAVED_CHARS = 20_000
AUTO_CANDIDATES = 10

RECALL_HEADER = "What you remember from earlier runs (use it when it is relevant; it may be out of date):"


def memory_of(node: Any, ctx: RunContext) -> MemoryConfig | None:
    """The node's `memory:`, else the workflow's."""
    return getattr(node, "memory", None) or ctx.workflow.spec.memory


def store_of(ctx: RunContext) -> MemoryStore:
    store = ctx.services.memory
    if store is None:
        raise NodeConfigError("memory is not available in this process (it was opened without a memory store)")
    return store


def scope_of(ctx: RunContext, kind: str, node_id: str) -> str:
    """The store's name of a scope, for this run; refuses a shared scope the workflow was not granted."""
    from agentflow.memory.base import scope_name

    name = ctx.workflow.name
    if kind in SHARED_SCOPES:
        if kind not in ctx.allowed.memory:
            raise NodeConfigError(
                f"workflow '{name}' is not granted the shared memory '{kind}'; a person must grant a version "
                f"that uses it (agentflow grant {name})"
            )
        return scope_name(kind)
    key = {
        "workflow": name,
        "agent": f"{name}/{node_id}",
        "user": f"{name}/{ctx.person}",
        "session": f"{name}/{ctx.session or 'run-' + ctx.run_id}",
    }[kind]
    return scope_name(kind, key)


def clean(ctx: RunContext, text: str) -> str:
    """Redact every secret value this run resolved and every operator secret, before anything is kept."""
    values = set(ctx.secrets)
    try:
        values.update(value for value in ctx.services.secrets.values() if isinstance(value, str) and len(value) >= 4)
    except Exception:  # a secrets source that cannot list its values: the run's own are still redacted
        log.debug("operator secrets could not be listed for redaction", exc_info=True)
    return str(redact(text, values))


def _hit_dict(hit: MemoryHit) -> dict[str, Any]:
    return {"id": hit.item.id, "scope": hit.item.scope, "text": hit.item.text, "score": round(hit.score, 6)}


async def search(ctx: RunContext, node_id: str, kinds: Sequence[str], query: str, k: int) -> list[MemoryHit]:
    """Search the run's scopes (keyword, and vectors when an embedding model is configured), as an event."""
    store = store_of(ctx)
    scopes = [scope_of(ctx, kind, node_id) for kind in kinds]
    started = time.perf_counter()
    error = None
    hits: list[MemoryHit] = []
    try:
        embedding, model = await _query_embedding(ctx, query)
        hits = await asyncio.to_thread(store.search, scopes, query, k=k, embedding=embedding, embedding_model=model)
        return hits
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        ctx.emit(
            MemoryRecalled(
                run_id=ctx.run_id,
                node_id=node_id,
                scopes=scopes,
                query=clean(ctx, query),
                items=[_hit_dict(hit) for hit in hits],
                latency_ms=(time.perf_counter() - started) * 1000,
                error=error,
            )
        )


async def _query_embedding(ctx: RunContext, query: str) -> tuple[list[float] | None, str | None]:
    embedder = ctx.services.embedder
    if embedder is None or not query.strip():
        return None, None
    try:
        return await embedder.embed_query(query), embedder.model
    except Exception as exc:  # vectors are an aid: keyword recall still answers
        log.warning("embedding the memory query failed (%s); recalling by keywords only", exc)
        return None, None


async def recall_block(
    ctx: RunContext, node_id: str, recall: Recall, scope: dict[str, Any], default_query: str
) -> str | None:
    """The memories to put before the node's prompt, within the token budget; None when nothing was found."""
    query = _text(render(recall.query, scope)) if recall.query else default_query
    hits = await search(ctx, node_id, recall.scopes, query, recall.top_k)
    return format_block([hit.item.text for hit in hits], recall.max_tokens)


def format_block(texts: Sequence[str], max_tokens: int) -> str | None:
    budget = max_tokens * CHARS_PER_TOKEN - len(RECALL_HEADER)
    lines: list[str] = []
    for text in texts:
        line = "- " + " ".join(text.split())
        if len(line) + 1 > budget:
            if not lines and budget > 40:  # the best match, cut, rather than nothing
                lines.append(line[: budget - 2] + "…")
            break
        lines.append(line)
        budget -= len(line) + 1
    return RECALL_HEADER + "\n" + "\n".join(lines) if lines else None


async def write(
    ctx: RunContext,
    node_id: str,
    kind: str,
    text: str,
    *,
    tags: Sequence[str] = (),
    importance: float = 0.5,
    ttl_s: float | None = None,
) -> str:
    """Add one memory to a scope of this run (redacted, embedded when vectors are on); its id."""
    store = store_of(ctx)
    scope = scope_of(ctx, kind, node_id)
    text = clean(ctx, text)[:MAX_SAVED_CHARS]
    started = time.perf_counter()
    item_id, error = "", None
    try:
        embedding, model = await _embedding(ctx, text)
        item = await asyncio.to_thread(
            store.add,
            scope,
            text,
            tags=list(tags),
            importance=importance,
            source_run=ctx.run_id,
            ttl_s=ttl_s,
            embedding=embedding,
            embedding_model=model,
        )
        item_id = item.id
        return item_id
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _written(ctx, node_id, scope, "add", item_id, text, started, error)


async def _embedding(ctx: RunContext, text: str) -> tuple[list[float] | None, str | None]:
    embedder = ctx.services.embedder
    if embedder is None:
        return None, None
    try:
        (vector,) = await embedder.embed([text])
        return vector, embedder.model
    except Exception as exc:
        log.warning("embedding a memory failed (%s); it is kept for keyword recall", exc)
        return None, None


def _written(
    ctx: RunContext,
    node_id: str,
    scope: str,
    operation: str,
    item_id: str,
    text: str | None,
    started: float,
    error: str | None,
) -> None:
    ctx.emit(
        MemoryWritten(
            run_id=ctx.run_id,
            node_id=node_id,
            scope=scope,
            operation=operation,  # type: ignore[arg-type]
            item_id=item_id,
            text=text,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=error,
        )
    )


async def save_after(
    ctx: RunContext,
    node_id: str,
    memory: MemoryConfig,
    scope: dict[str, Any],
    output: Any,
    models: list[str],
    given: str = "",
) -> None:
    """What a node keeps once it succeeded: its `save.text`, or the facts a model extracts (`save: auto`)."""
    save = memory.save
    if isinstance(save, Save):
        text = _text(render(save.text, {**scope, node_id: output, "output": output}))
        if text.strip():
            ttl = parse_duration(save.ttl) if save.ttl is not None else None
            await write(ctx, node_id, save.scope, text, tags=save.tags, importance=save.importance, ttl_s=ttl)
    elif isinstance(save, AutoSave):
        from agentflow.engine.memory_auto import extract_and_reconcile

        await extract_and_reconcile(ctx, node_id, save, given, _text(output), [save.model] if save.model else models)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class MemoryAccess:
    """What the memory tools of an agent node reach: this run's scopes, as events."""

    ctx: RunContext
    node_id: str

    async def search(self, query: str, kind: str = "workflow", k: int = 5) -> list[dict[str, Any]]:
        hits = await search(self.ctx, self.node_id, [kind], query, k)
        return [{"id": hit.item.id, "text": hit.item.text, "score": round(hit.score, 4)} for hit in hits]

    async def save(self, text: str, kind: str = "workflow", tags: Sequence[str] = (), importance: float = 0.5) -> str:
        return await write(self.ctx, self.node_id, kind, text, tags=tags, importance=importance)
