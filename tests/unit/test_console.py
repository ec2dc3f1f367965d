"""The run console's body: each execution with its inputs, calls, output, error and retries; text escaped."""

from __future__ import annotations

from typing import Any

from agentflow.engine.nodes.base import MAX_SHOWN_CHARS, MAX_SHOWN_ITEMS, clipped, node_inputs, transcript
from agentflow.web.ui.console import render


def started(node_id: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"type": "node_started", "node_id": node_id, "node_type": "llm", "at": at, **extra}


def finished(node_id: str, at: float, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {"type": "node_finished", "node_id": node_id, "node_type": "llm", "status": status, "at": at, **extra}


def test_a_model_call_shows_the_prompt_and_the_reply_escaped() -> None:
    events = [
        started("draft", 1.0, inputs={"inputs": {"text": "Q3"}}),
        {
            "type": "llm_call", "node_id": "draft", "model": "openai/m", "input_tokens": 5, "output_tokens": 3,
            "cost_usd": 0.0001, "latency_ms": 12.0, "at": 1.1,
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<b>Q3</b> ***"}],
            "reply": {"role": "assistant", "content": "<script>alert(1)</script>"},
        },
        finished("draft", 1.2, output="done", tokens=8),
    ]  # fmt: skip
    html = render(events)
    assert "Be brief." in html and "&lt;b&gt;Q3&lt;/b&gt; ***" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "5 in / 3 out (8 tokens)" in html
    assert "&quot;text&quot;: &quot;Q3&quot;" in html  # the node's inputs
    assert "succeeded" in html


def test_retries_errors_tool_calls_and_the_approval_waiting() -> None:
    events = [
        started("fetch", 1.0, node_type="tool"),
        {"type": "tool_call", "node_id": "fetch", "tool": "http_request", "latency_ms": 3.0, "at": 1.1,
         "arguments": {"url": "https://example.com"}, "error": "HTTP 503"},
        finished("fetch", 1.2, status="failed", node_type="tool", error="ToolError: HTTP 503"),
        started("fetch", 2.0, node_type="tool", attempt=2),
        finished("fetch", 2.1, node_type="tool", attempt=2, output={"ok": True}),
        {"type": "approval_requested", "node_id": "ship", "message": "Ship it?", "at": 3.0},
    ]  # fmt: skip
    html = render(events, pending="Ship it?")
    assert html.count('class="console-node"') == 2
    assert "retry: attempt 2" in html
    assert "ToolError: HTTP 503" in html and "https://example.com" in html
    assert "Waiting for a person:</b> Ship it?" in html


def test_a_node_started_when_the_run_stopped_shows_as_interrupted() -> None:
    html = render([started("slow", 1.0), {"type": "run_finished", "status": "cancelled", "at": 2.0}])
    assert "interrupted" in html
    assert "running" in render([started("slow", 1.0)])
    assert "queued" in render([])


def test_recorded_texts_are_cut_and_long_histories_keep_their_ends() -> None:
    long = "x" * (MAX_SHOWN_CHARS + 10)
    assert clipped({"a": [long]})["a"][0].endswith(f"… [{len(long)} chars]")
    cut = clipped(list(range(MAX_SHOWN_ITEMS + 5)))
    assert len(cut) == MAX_SHOWN_ITEMS + 1 and cut[-1] == "… 5 more items"
    history = [{"role": "user", "content": str(index)} for index in range(100)]
    kept = transcript(history)
    assert [message["content"] for message in kept[:2]] == ["0", "1"]
    assert "earlier messages not recorded" in kept[2]["content"]
    assert kept[-1]["content"] == "99"


def test_a_node_reads_its_needs_or_the_run_inputs() -> None:
    class Node:
        needs = ("a",)

    scope = {"inputs": {"n": 1}, "a": {"v": 2}, "b": 3, "item": "x"}
    assert node_inputs(Node(), scope, None) == {"a": {"v": 2}}
    assert node_inputs(object(), scope, 4) == {"item": "x"}
    assert node_inputs(object(), scope, None) == {"inputs": {"n": 1}}
