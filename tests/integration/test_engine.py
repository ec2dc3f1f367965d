"""Every node type and control-flow rule, run for real: LangGraph, SQLite, LiteLLM → fake server."""

from __future__ import annotations

import pytest

from agentflow.runtime import AgentFlow
from tests.fakes.openai_server import Error, FakeLLM, Json, Text, ToolCalls
from tests.integration.helpers import node_statuses, prompts, run_source, workflow


async def test_llm_node_records_reply_tokens_and_cost(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("Bonjour", usage=(10, 5)))
    source = workflow(
        "greet",
        """
        inputs: {name: string}
        nodes:
          say: {type: llm, system: Be brief., prompt: "Greet {{ inputs.name }} in French"}
        outputs: {reply: "{{ say }}"}
        """,
    )
    run = await run_source(flow, source, {"name": "Ada"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"reply": "Bonjour"}
    assert run.tokens == 15
    assert run.cost_usd == pytest.approx(10 * 1e-6 + 5 * 2e-6)
    [request] = fake_llm.requests
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Greet Ada in French"},
    ]
    [node] = flow.store.node_runs(run.id)
    assert (node.node_id, node.status, node.tokens, node.model) == ("say", "succeeded", 15, "openai/test-model")
    types = [event["type"] for event in flow.store.events(run.id)]
    assert types == ["run_started", "node_started", "llm_call", "node_finished", "run_finished"]


async def test_structured_output_is_validated_and_addressable(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Json({"category": "oops"}))  # not in the enum: repaired
    fake_llm.enqueue(Json({"category": "bug"}))
    source = workflow(
        "classify",
        """
        nodes:
          classify:
            type: llm
            prompt: Classify it
            output: {category: {type: string, enum: [bug, billing]}}
          shout: {type: transform, expr: "join('!', [classify.category, ''])", needs: [classify]}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"shout": "bug!"}
    assert fake_llm.count() == 2


async def test_agent_calls_tools_then_answers(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(ToolCalls([("calculator", {"expression": "6*7"})]))
    fake_llm.enqueue(Text("The answer is 42"))
    source = workflow(
        "agent",
        """
        nodes:
          solve:
            type: agent
            instructions: Use the calculator.
            input: What is 6*7?
            tools: [calculator]
            max_turns: 3
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"solve": "The answer is 42"}
    second = fake_llm.requests[1]["messages"]
    assert second[-1]["role"] == "tool" and "42" in second[-1]["content"]
    assert [event["tool"] for event in flow.store.events(run.id) if event["type"] == "tool_call"] == ["calculator"]


async def test_tool_node_renders_arguments(flow: AgentFlow) -> None:
    source = workflow(
        "tool",
        """
        inputs: {a: integer, b: integer}
        nodes:
          add: {type: tool, tool: calculator, args: {expression: "{{ inputs.a }} + {{ inputs.b }}"}}
        """,
    )
    run = await run_source(flow, source, {"a": "2", "b": "40"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"add": 42}


async def test_switch_runs_the_chosen_branch_and_skips_the_other(flow: AgentFlow) -> None:
    source = workflow(
        "branch",
        """
        inputs: {n: integer}
        nodes:
          route:
            type: switch
            cases: [{when: "inputs.n > `10`", goto: big}]
            default: small
          big: {type: transform, expr: "'big'"}
          small: {type: transform, expr: "'small'"}
          after_small: {type: transform, expr: "'after small'", needs: [small]}
          join: {type: transform, expr: "[big, small, after_small]", needs: [big, after_small]}
        outputs: {seen: "{{ join }}"}
        """,
    )
    run = await run_source(flow, source, {"n": 50})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"seen": ["big", None, None]}
    statuses = node_statuses(flow, run.id)
    assert statuses["small"] == ["skipped"] and statuses["after_small"] == ["skipped"]
    assert statuses["join"] == ["succeeded"]

    run = await run_source(flow, source, {"n": 1})
    assert run.outputs == {"seen": [None, "small", "after small"]}


LOOP = """
inputs: {target: integer}
nodes:
  count: {type: transform, expr: "sum([count || `0`, `1`])"}
  check:
    type: transform
    needs: [count]
    expr: "count"
    loop: {back_to: count, until: "check >= inputs.target", max: 5}
  done: {type: transform, expr: "check", needs: [check]}
"""


async def test_loop_ends_when_its_condition_holds(flow: AgentFlow) -> None:
    run = await run_source(flow, workflow("loop", LOOP), {"target": 3})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"done": 3}
    assert node_statuses(flow, run.id)["count"] == ["succeeded"] * 3


async def test_loop_ends_at_max(flow: AgentFlow) -> None:
    run = await run_source(flow, workflow("loop", LOOP), {"target": 100})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"done": 5}
    assert len(node_statuses(flow, run.id)["check"]) == 5


async def test_review_loop_feeds_back_into_the_draft(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue_all(
        [
            Text("draft 1"),
            Json({"ok": False, "feedback": "shorter"}),
            Text("draft 2"),
            Json({"ok": True, "feedback": ""}),
        ]
    )
    source = workflow(
        "review",
        """
        nodes:
          draft: {type: llm, prompt: "Write. Feedback so far: {{ review.feedback }}"}
          review:
            type: llm
            needs: [draft]
            prompt: "Review {{ draft }}"
            output: {ok: {type: boolean}, feedback: {type: string}}
            loop: {back_to: draft, until: review.ok, max: 3}
        outputs: {final: "{{ draft }}"}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"final": "draft 2"}
    assert prompts(fake_llm.requests)[2] == "Write. Feedback so far: shorter"


async def test_map_branches_overlap_and_fan_in_in_order(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda body: Text(body["messages"][-1]["content"].upper(), latency=0.3)
    source = workflow(
        "fanout",
        """
        inputs: {words: {type: array}}
        nodes:
          each:
            type: map
            over: inputs.words
            concurrency: 4
            node: {type: llm, prompt: "{{ item }}"}
        """,
    )
    run = await run_source(flow, source, {"words": ["a", "b", "c", "d"]})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"each": ["A", "B", "C", "D"]}
    assert fake_llm.max_concurrency() == 4


async def test_map_concurrency_cap_is_respected(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("x", latency=0.1)
    source = workflow(
        "capped",
        """
        nodes:
          each: {type: map, over: "`[1, 2, 3, 4, 5, 6]`", concurrency: 2, node: {type: llm, prompt: "{{ item }}"}}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert fake_llm.count() == 6
    assert fake_llm.max_concurrency() == 2


async def test_independent_nodes_run_concurrently_and_fan_in_waits_for_all(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda body: Text(body["messages"][-1]["content"], latency=0.3)
    source = workflow(
        "parallel",
        """
        nodes:
          left: {type: llm, prompt: left}
          right: {type: llm, prompt: right}
          both: {type: transform, expr: "[left, right]", needs: [left, right]}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"both": ["left", "right"]}
    assert fake_llm.max_concurrency() == 2


async def test_fallback_to_the_second_model_on_provider_error(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Error(500, "primary is down"), model="primary")
    fake_llm.enqueue(Text("from backup"), model="backup")
    source = workflow(
        "fallback",
        """
        nodes:
          ask: {type: llm, prompt: hi, model: [openai/primary, openai/backup]}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"ask": "from backup"}
    assert [request["model"] for request in fake_llm.requests] == ["primary", "backup"]
    [node] = flow.store.node_runs(run.id)
    assert node.model == "openai/backup"


async def test_node_retry_then_success(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Error(500, "flaky"))
    fake_llm.enqueue(Text("fine"))
    source = workflow(
        "retry",
        """
        nodes:
          ask: {type: llm, prompt: hi, retry: {attempts: 3, delay: 10ms, backoff: 2}}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert node_statuses(flow, run.id)["ask"] == ["failed", "succeeded"]


async def test_timeout_fails_the_node_with_a_clear_error(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("late", latency=3)
    source = workflow("slow", "nodes:\n  ask: {type: llm, prompt: hi, timeout: 200ms}")
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "node 'ask' failed" in (run.error or "") and "timed out after 0.2s" in (run.error or "")


async def test_missing_model_says_what_to_configure(flow: AgentFlow, home) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    flow.engine.services.settings = replace(flow.settings, model=None)
    run = await run_source(flow, workflow("nomodel", "nodes:\n  ask: {type: llm, prompt: hi}"))
    assert run.status == "failed"
    assert "AGENTFLOW_MODEL" in (run.error or "")


async def test_independent_branch_failure_fails_the_run(flow: AgentFlow) -> None:
    source = workflow(
        "bad-over",
        """
        nodes:
          each: {type: map, over: "'not a list'", node: {type: transform, expr: item}}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "not a list" in (run.error or "")
