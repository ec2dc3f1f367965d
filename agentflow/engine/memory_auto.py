"""`save: auto`: a model reads what a node produced beside what is already remembered, and says what to
keep — add a new fact, update one that changed, delete one that is no longer true, or nothing.

The model sees the existing memories by short ids (`m1`, `m2`...), never the store's; an operation on an
id it was not shown is ignored. Its call is priced and traced like any other model call of the node.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from agentflow.engine.memory import AUTO_CANDIDATES, MAX_SAVED_CHARS, _embedding, _written, clean, scope_of, store_of

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext
    from agentflow.spec.memory import AutoSave

SYSTEM = """You maintain a memory of durable facts for an automated workflow.
You are given the facts already remembered (each with an id) and new content.
Decide what to remember from the new content:
- "add": a new durable fact (a preference, a decision, a name, a number that will matter later), one per operation;
- "update": a remembered fact the new content changes or contradicts (give its id and the corrected text);
- "delete": a remembered fact the new content shows is no longer true (give its id);
- nothing, when the content holds nothing worth keeping. Never store secrets, passwords or keys.
Answer with JSON: {"operations": [{"op": "add"|"update"|"delete", "id": "m1", "text": "..."}]}."""

OPERATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "operations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "op": {"type": "string", "enum": ["add", "update", "delete"]},
                    "id": {"type": "string"},
                    "text": {"type": "string"},
                },
                "required": ["op"],
            },
        }
    },
    "required": ["operations"],
    "additionalProperties": False,
}
MAX_OPERATIONS = 20
RECENT = 5


async def extract_and_reconcile(
    ctx: RunContext, node_id: str, save: AutoSave, given: str, output: str, models: list[str]
) -> None:
    """Ask a model what the exchange (what the node was given, what it answered) changes in the scope."""
    from agentflow.engine.memory import search
    from agentflow.engine.nodes.base import llm_hooks

    if not (given.strip() or output.strip()):
        return
    content = clean(ctx, f"The node was given:\n{given}\n\nIt answered:\n{output}")[:MAX_SAVED_CHARS]
    hits = await search(ctx, node_id, [save.scope], content, AUTO_CANDIDATES)
    # The newest facts too: a contradiction rarely shares its words ("moved to Berlin" / "lives in Paris").
    newest = await asyncio.to_thread(store_of(ctx).list, scope_of(ctx, save.scope, node_id), limit=RECENT)
    candidates = {hit.item.id: hit.item for hit in hits} | {item.id: item for item in newest}
    shown = {f"m{index}": item for index, item in enumerate(list(candidates.values())[:AUTO_CANDIDATES], 1)}
    remembered = [{"id": key, "text": item.text} for key, item in shown.items()]
    messages = [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f"Remembered facts:\n{json.dumps(remembered, ensure_ascii=False)}\n\nNew content:\n{content}",
        },
    ]
    result = await ctx.services.llm.complete(
        models=models, messages=messages, output_schema=OPERATIONS_SCHEMA, temperature=0, **llm_hooks(ctx, node_id)
    )
    operations = (result.data or {}).get("operations") or []
    store = store_of(ctx)
    scope = scope_of(ctx, save.scope, node_id)
    from agentflow.engine.memory import write

    for operation in operations[:MAX_OPERATIONS]:
        if not isinstance(operation, dict):
            continue
        op, key, text = operation.get("op"), operation.get("id"), clean(ctx, str(operation.get("text") or ""))
        if op == "add" and text.strip():
            await write(ctx, node_id, save.scope, text)
        elif ((op == "update" and text.strip()) or op == "delete") and key in shown:
            item = shown[key]
            started = time.perf_counter()
            error = None
            try:
                if op == "update":
                    embedding, model = await _embedding(ctx, text)
                    await asyncio.to_thread(
                        store.update, item.id, text=text[:MAX_SAVED_CHARS], embedding=embedding, embedding_model=model
                    )
                else:
                    await asyncio.to_thread(store.delete, item.id)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                _written(ctx, node_id, scope, op, item.id, text if op == "update" else item.text, started, error)
