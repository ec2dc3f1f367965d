"""The run console's body: each node execution with its model calls (prompt sent, reply), tool calls
(arguments, result), memory reads and writes, a remote agent's updates, output, error and retries, in the
order they started; built from the run's events.

Everything shown came from the engine already redacted and truncated (agentflow/engine/nodes/base.py);
here it is only escaped: a model's reply is text, never markup.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from agentflow.web.ui.queries import money

MARKS = {"succeeded": "✓", "failed": "✗", "waiting": "⏸", "running": "…", "skipped": "–"}


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _pre(value: Any, css: str = "") -> str:
    return f'<pre class="console-pre {css}">{escape(_json(value))}</pre>'


def _message(message: Any) -> str:
    if not isinstance(message, dict):
        return _pre(message)
    role = str(message.get("role", "?"))
    body = message.get("content")
    parts = [f'<div class="console-msg console-{escape(role)}"><b>{escape(role)}</b>']
    if body not in (None, ""):
        parts.append(_pre(body))
    for call in message.get("tool_calls") or ():
        function = call.get("function", call) if isinstance(call, dict) else {}
        parts.append(_pre(f"→ {function.get('name', '?')}({_json(function.get('arguments', ''))})", "console-tool"))
    parts.append("</div>")
    return "".join(parts)


def _llm_call(event: dict[str, Any]) -> str:
    tokens = (event.get("input_tokens") or 0) + (event.get("output_tokens") or 0)
    summary = (
        f"model call · {escape(str(event.get('model')))} · {event.get('input_tokens', 0)} in / "
        f"{event.get('output_tokens', 0)} out ({tokens} tokens) · {money(event.get('cost_usd') or 0.0)} · "
        f"{event.get('latency_ms', 0):.0f} ms"
    )
    if event.get("prompt_ref"):
        summary += f' · prompt <span class="console-prompt-ref">{escape(str(event["prompt_ref"]))}</span>'
    if event.get("variant"):
        summary += f" · variant {escape(str(event['variant']))}"
    if event.get("error"):
        summary += f' · <span class="console-error">{escape(str(event["error"]))}</span>'
    prompt = event.get("prompt")
    sent = "".join(_message(message) for message in prompt) if prompt else "<i>not recorded</i>"
    reply = event.get("reply")
    answered = _message(reply) if reply is not None else "<i>no reply</i>"
    return (
        f'<details class="console-call console-llm"><summary>{summary}</summary>'
        f'<div class="console-prompt"><h5>Prompt sent</h5>{sent}</div>'
        f'<div class="console-reply"><h5>Reply</h5>{answered}</div></details>'
    )


def _tool_call(event: dict[str, Any]) -> str:
    summary = f"tool call · {escape(str(event.get('tool')))} · {event.get('latency_ms', 0):.0f} ms"
    if event.get("error"):
        summary += f' · <span class="console-error">{escape(str(event["error"]))}</span>'
    return (
        f'<details class="console-call console-tool-call"><summary>{summary}</summary>'
        f"<h5>Arguments</h5>{_pre(event.get('arguments'))}<h5>Result</h5>{_pre(event.get('result'))}</details>"
    )


def _memory_call(event: dict[str, Any]) -> str:
    error = f' · <span class="console-error">{escape(str(event["error"]))}</span>' if event.get("error") else ""
    latency = f"{event.get('latency_ms', 0):.0f} ms"
    if event["type"] == "memory_recall":
        scopes = ", ".join(str(scope) for scope in event.get("scopes", ()))
        found = event.get("items") or []
        summary = f"memory recall · {escape(scopes)} · {len(found)} found · {latency}{error}"
        body = f"<h5>Query</h5>{_pre(event.get('query'))}<h5>Found</h5>{_pre(found)}"
    else:
        summary = f"memory {escape(str(event.get('operation')))} · {escape(str(event.get('scope')))} · {latency}{error}"
        body = f"<h5>{escape(str(event.get('item_id')))}</h5>{_pre(event.get('text'))}"
    return f'<details class="console-call console-memory"><summary>{summary}</summary>{body}</details>'


def _remote_update(event: dict[str, Any]) -> str:
    state = escape(str(event.get("state")))
    if state in ("unreachable", "stale", "offline", "input-required"):
        state = f'<span class="console-error">{state}</span>'
    summary = f"remote · {escape(str(event.get('agent')))} · {state}"
    text = event.get("text")
    body = _pre(text) if text else ""
    return f'<details class="console-call console-remote"><summary>{summary}</summary>{body}</details>'


def _call(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "remote_update":
        return _remote_update(event)
    return _llm_call(event) if kind == "llm_call" else _tool_call(event) if kind == "tool_call" else _memory_call(event)


class _Execution:
    def __init__(self, started: dict[str, Any]) -> None:
        self.started = started
        self.finished: dict[str, Any] | None = None
        self.calls: list[dict[str, Any]] = []

    def html(self, *, stopped: bool) -> str:
        event = self.finished or self.started
        status = self.finished["status"] if self.finished else ("interrupted" if stopped else "running")
        name = event["node_id"] + (f"[{event['item_index']}]" if event.get("item_index") is not None else "")
        facts = [escape(str(event.get("node_type", "")))]
        if event.get("variant"):
            facts.append(f"variant {escape(str(event['variant']))}")
        if event.get("pinned"):
            facts.append("pinned: given with the run, not executed")
        if event.get("reused_from"):
            facts.append(f"reused from run {escape(str(event['reused_from'])[:12])}, not executed again")
        if event.get("attempt", 1) > 1:
            facts.append(f"retry: attempt {event['attempt']}")
        if event.get("iteration"):
            facts.append(f"loop {event['iteration'] + 1}")
        if self.finished:
            facts.append(f"{self.finished.get('latency_ms', 0):.0f} ms")
            if self.finished.get("tokens"):
                facts.append(f"{self.finished['tokens']} tokens, {money(self.finished.get('cost_usd') or 0.0)}")
        head = (
            f'<summary><span class="console-mark console-{escape(status)}">{MARKS.get(status, "?")}</span> '
            f"<b>{escape(name)}</b> · {' · '.join(facts)} · {escape(status)}</summary>"
        )
        body = []
        if self.started.get("inputs") is not None:
            body.append(
                f'<details class="console-call console-inputs"><summary>inputs</summary>'
                f"{_pre(self.started['inputs'])}</details>"
            )
        body += [_call(call) for call in self.calls]
        if self.finished and self.finished.get("error"):
            body.append(f'<div class="console-error"><b>Error:</b> {escape(str(self.finished["error"]))}</div>')
        if self.finished and self.finished.get("output") is not None:
            body.append(f"<h5>Output</h5>{_pre(self.finished['output'])}")
        return f'<details class="console-node" open>{head}{"".join(body)}</details>'


def render(events: list[dict[str, Any]], *, pending: str | None = None) -> str:
    """The console for a run's events; `pending` is the message of the approval it waits for."""
    executions: list[_Execution] = []
    running: dict[tuple[Any, ...], _Execution] = {}
    latest: dict[str, _Execution] = {}
    notes: list[str] = []
    for event in events:
        kind = event.get("type")
        if kind == "node_started":
            key = (event["node_id"], event.get("item_index"), event.get("attempt", 1), event.get("iteration", 0))
            execution = running[key] = _Execution(event)
            executions.append(execution)
            latest[event["node_id"]] = execution
        elif kind == "node_finished":
            key = (event["node_id"], event.get("item_index"), event.get("attempt", 1), event.get("iteration", 0))
            found = running.pop(key, None)
            if found is None:  # skipped nodes and approvals finish without a start
                if event.get("status") == "skipped":
                    continue
                found = _Execution(event)
                executions.append(found)
            found.finished = event
        elif kind in ("llm_call", "tool_call", "memory_recall", "memory_write", "remote_update"):
            owner = latest.get(event.get("node_id", ""))
            if owner is not None:
                owner.calls.append(event)
        elif kind == "budget_exceeded":
            notes.append(
                f"<p class='console-error'><b>Budget exceeded:</b> {escape(str(event.get('limit')))} — used "
                f"{event.get('used')} of {event.get('allowed')}</p>"
            )
        elif kind == "approval_decided":
            verdict = "approved" if event.get("approved") else "rejected"
            comment = f": {escape(str(event['comment']))}" if event.get("comment") else ""
            notes.append(f"<p><b>{escape(event['node_id'])}</b> {verdict} by a person{comment}</p>")
    stopped = bool(events) and events[-1].get("type") in ("run_finished", "approval_requested")
    parts = [execution.html(stopped=stopped) for execution in executions]
    if pending is not None:
        parts.append(f'<div class="console-waiting"><b>Waiting for a person:</b> {escape(pending)}</div>')
    if not parts and not notes:
        return '<p class="console-empty">Nothing has run yet: the run is queued.</p>'
    return '<div class="console">' + "".join(parts + notes) + "</div>"
