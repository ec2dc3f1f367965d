"""Analyse a run with a model: a redacted, size-bounded digest of its trace, and the model's reading of it.

`digest` turns a run and its events into a small JSON document (each value cut at MAX_VALUE_CHARS,
the whole bounded by MAX_DIGEST_CHARS: errors and the run's end are kept first, then events in
order). Events are redacted when recorded; the digest is redacted again with every secret this
installation knows (the operator's secrets, its own keys and tokens, the providers' API keys), so a
value that slipped into an error or an output does not leave with it.

`analyse_run` sends the digest to a model through the project's LLM client with a structured-output
schema (`ANALYSIS_SCHEMA`) and returns an `Analysis`. The model is `--model`, else
AGENTFLOW_ANALYSE_MODEL, else the model the chat uses (AGENTFLOW_MODEL or the first detected).
Its calls are in the cost ledger with source "analyse" and session `analyse:<run id>`, and stop
with the global daily budget, like the assistant's. docs/analyse.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentflow.engine.nodes.base import clipped
from agentflow.progress import node_table
from agentflow.providers import KEYS
from agentflow.secrets import redact
from agentflow.store.base import RunRecord

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

MAX_DIGEST_CHARS = 24_000
MAX_VALUE_CHARS = 600
SLOWEST = 3
ANALYSIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "root_cause": {"type": "string"},
        "spans": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"node_id": {"type": "string"}, "event": {"type": "string"}, "why": {"type": "string"}},
                "required": ["node_id", "event", "why"],
                "additionalProperties": False,
            },
        },
        "suggestions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["summary", "root_cause", "spans", "suggestions"],
    "additionalProperties": False,
}
_KEPT = (
    "type", "node_id", "node_type", "status", "attempt", "iteration", "item_index", "latency_ms", "error", "model",
    "tokens", "cost_usd", "input_tokens", "output_tokens", "tool", "limit", "used", "allowed", "approved", "message",
    "pinned",
)  # fmt: skip
_CLIPPED = ("inputs", "output", "outputs", "arguments", "result")
_IMPORTANT = frozenset({"run_finished", "budget_exceeded", "approval_requested"})


class AnalyseError(Exception):
    """The model could not give an analysis; the message says why."""


class NoModelError(AnalyseError):
    """No model is configured to analyse with; the message says what to set."""


@dataclass(frozen=True, slots=True)
class Analysis:
    run_id: str
    model: str
    summary: str
    root_cause: str
    spans: list[dict[str, str]] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "summary": self.summary,
            "root_cause": self.root_cause,
            "spans": self.spans,
            "suggestions": self.suggestions,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
        }

    def markdown(self) -> str:
        """The analysis for people (the CLI's text and the run console)."""
        lines = [f"**Summary.** {self.summary}", "", f"**Root cause.** {self.root_cause}"]
        if self.spans:
            lines += ["", "**Where to look:**"]
            lines += [f"- `{span['node_id']}` ({span['event']}): {span['why']}" for span in self.spans]
        if self.suggestions:
            lines += ["", "**Suggestions:**"] + [f"- {suggestion}" for suggestion in self.suggestions]
        lines += ["", f"_{self.model}, {self.tokens} tokens, ${self.cost_usd:.6f}_"]
        return "\n".join(lines)


def known_secrets(flow: AgentFlow) -> list[str]:
    """Every secret value this process knows: the operator's, its own credentials, the providers' keys."""
    services = flow.engine.services
    settings = flow.settings
    values = list(services.secrets.values())
    values += [
        value
        for value in (
            settings.api_key,
            settings.password,
            settings.api_token,
            settings.telegram_token,
            settings.telegram_secret,
            settings.twilio_auth_token,
        )
        if value
    ]
    values += [services.environ[name] for name in KEYS.values() if services.environ.get(name)]
    return values


def digest(run: RunRecord, events: list[dict[str, Any]], node_runs: list[Any], secrets: list[str]) -> dict[str, Any]:
    """The run's trace as the model reads it: redacted, each value cut, the whole bounded."""
    start = run.started_at or (events[0]["at"] if events else 0.0)
    rows = node_table(node_runs)
    compact = [_compact(event, start) for event in events if event.get("type") != "run_started"]
    kept, left_out = _bounded(compact, MAX_DIGEST_CHARS - len(json.dumps(rows, default=str)))
    document = {
        "run": {
            "id": run.id,
            "workflow": run.workflow,
            "version": run.version,
            "status": run.status,
            "error": run.error,
            "trigger": run.trigger,
            "inputs": _cut(run.inputs),
            "outputs": _cut(run.outputs),
            "wall_ms": round((run.finished_at - run.started_at) * 1000, 1)
            if run.started_at and run.finished_at
            else None,
            "tokens": run.tokens,
            "cost_usd": run.cost_usd,
            "steps": run.steps,
        },
        "nodes": rows,
        "slowest": [row["id"] for row in sorted(rows, key=lambda row: -row["latency_ms"])[:SLOWEST]],
        "events": kept,
        "events_left_out": left_out,
    }
    redacted: dict[str, Any] = redact(document, secrets)
    return redacted


def _compact(event: dict[str, Any], start: float) -> dict[str, Any]:
    """One event, with what explains a run and nothing bulky."""
    found: dict[str, Any] = {"t_ms": round((float(event.get("at") or start) - start) * 1000, 1)}
    found.update({key: event[key] for key in _KEPT if event.get(key) not in (None, "", 0, False)})
    found.update({key: _cut(event[key]) for key in _CLIPPED if event.get(key) is not None})
    if event.get("type") == "llm_call":
        prompt = event.get("prompt") or []
        if prompt:
            found["last_message"] = _cut(prompt[-1].get("content"))
        if event.get("reply"):
            found["reply"] = _cut(event["reply"].get("content") or event["reply"].get("tool_calls"))
    if isinstance(found.get("error"), str):
        found["error"] = _cut(found["error"])
    return found


def _bounded(events: list[dict[str, Any]], budget: int) -> tuple[list[dict[str, Any]], int]:
    """The events that fit in `budget` characters: errors and the run's end first, then the rest in order."""
    sizes = [len(json.dumps(event, default=str)) for event in events]
    order = sorted(range(len(events)), key=lambda index: (not _important(events[index]), index))
    chosen, used = set(), 0
    for index in order:
        if used + sizes[index] > budget:
            continue
        chosen.add(index)
        used += sizes[index]
    return [events[index] for index in sorted(chosen)], len(events) - len(chosen)


def _important(event: dict[str, Any]) -> bool:
    return bool(event.get("error")) or event.get("status") == "failed" or event.get("type") in _IMPORTANT


def _cut(value: Any) -> Any:
    """`value` with long texts and lists cut (clipped), then cut to MAX_VALUE_CHARS as a whole."""
    value = clipped(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    return text[:MAX_VALUE_CHARS] + f"… [{len(text)} chars]"


def analysis_model(flow: AgentFlow, model: str | None = None) -> str:
    """The model to ask: the one given, else AGENTFLOW_ANALYSE_MODEL, else the chat's default."""
    chosen = model or flow.settings.analyse_model or flow.engine.services.default_model()
    if not chosen:
        raise NoModelError(
            "no model to analyse with: pass --model (e.g. ollama_chat/llama3.2), or set AGENTFLOW_ANALYSE_MODEL "
            "or AGENTFLOW_MODEL; `agentflow chat` lists the providers this machine can use"
        )
    return chosen


async def analyse_run(flow: AgentFlow, run: RunRecord, *, model: str | None = None) -> Analysis:
    """Ask a model what happened in `run`; AnalyseError when it cannot answer, BudgetExceededError when the
    global daily budget is spent."""
    import asyncio

    from agentflow.chat.prompts import load_prompt
    from agentflow.llm.errors import LLMError
    from agentflow.observability.costs import assistant_hooks

    chosen = analysis_model(flow, model)
    await flow.store.flush()
    events, node_runs = await asyncio.to_thread(lambda: (flow.store.events(run.id), flow.store.node_runs(run.id)))
    trace = digest(run, events, node_runs, known_secrets(flow))
    messages = [
        {"role": "system", "content": load_prompt("analyse")},
        {"role": "user", "content": json.dumps(trace, ensure_ascii=False, default=str)},
    ]
    services = flow.engine.services
    hooks = assistant_hooks(flow.store, services.ledger, f"analyse:{run.id}", source="analyse")
    try:
        result = await services.llm.complete(
            models=[chosen], messages=messages, output_schema=ANALYSIS_SCHEMA, temperature=0.0, **hooks
        )
    except LLMError as exc:
        raise AnalyseError(f"the model could not analyse run {run.id}: {exc}") from None
    finally:
        await flow.store.flush()
    data = result.data
    return Analysis(
        run_id=run.id,
        model=result.model,
        summary=data["summary"],
        root_cause=data["root_cause"],
        spans=list(data["spans"]),
        suggestions=list(data["suggestions"]),
        tokens=result.input_tokens + result.output_tokens,
        cost_usd=result.cost_usd,
    )
