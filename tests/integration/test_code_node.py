"""The `code` node and the python/shell tools, on a real sandbox (bubblewrap here; every backend in the contract
suite): input as JSON, result as JSON, limits from YAML, the grant, and refusal when no sandbox exists."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.runtime import AgentFlow
from agentflow.spec.errors import SpecErrors
from agentflow.trust.capabilities import Capabilities
from agentflow.trust.grants import NeedsGrantError
from tests.conftest import fake_settings
from tests.fakes.openai_server import FakeLLM, Text, ToolCalls
from tests.integration.helpers import node_statuses, run_source, workflow

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make test has it)"),
    pytest.mark.store_agnostic,
]


@pytest.fixture
def flow(home: Path, fake_llm: FakeLLM) -> Iterator[AgentFlow]:
    instance = AgentFlow.open(dataclasses.replace(fake_settings(home, fake_llm), sandbox="bwrap"))
    yield instance
    instance.close()


def events(flow: AgentFlow, run_id: str, kind: str) -> list[dict[str, object]]:
    return [event for event in flow.store.events(run_id) if event["type"] == kind]


SUM = workflow(
    "sum-code",
    """
    inputs: {numbers: array}
    nodes:
      total:
        type: code
        code: |
          print("adding", len(inputs["numbers"]), "numbers")
          result = {"sum": sum(inputs["numbers"]), "count": len(inputs["numbers"])}
        output: {sum: number, count: integer}
    outputs: {sum: "{{ total.sum }}", count: "{{ total.count }}"}
    """,
)


async def test_a_python_code_node_gets_its_input_as_json_and_returns_json(flow: AgentFlow) -> None:
    run = await run_source(flow, SUM, {"numbers": [1, 2, 3.5]})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"sum": 6.5, "count": 3}
    (call,) = events(flow, run.id, "tool_call")
    assert call["tool"] == "sandbox/python"
    assert call["arguments"]["backend"] == "bwrap"
    assert call["arguments"]["limits"]["memory"] == "256 MB"
    assert "adding 3 numbers" in call["result"]["log"]


async def test_the_input_is_data_never_code(flow: AgentFlow) -> None:
    # A value that would be code if it were interpolated into the program stays a string.
    source = workflow(
        "inert-input",
        """
        inputs: {text: string}
        nodes:
          echo: {type: code, code: "result = inputs['text'][::-1][::-1]"}
        outputs: {text: "{{ echo }}"}
        """,
    )
    hostile = "'); import os; os.system('touch /tmp/pwned'); ('"
    run = await run_source(flow, source, {"text": hostile})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"text": hostile}
    assert not Path("/tmp/pwned").exists()


async def test_main_receives_the_needs_results(flow: AgentFlow) -> None:
    source = workflow(
        "needs-code",
        """
        nodes:
          words: {type: transform, expr: "['a', 'bb', 'ccc']"}
          lengths:
            type: code
            needs: [words]
            code: |
              def main(inputs):
                  return [len(word) for word in inputs["words"]]
        outputs: {lengths: "{{ lengths }}"}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"lengths": [1, 2, 3]}


async def test_a_shell_node_reads_stdin_and_its_stdout_is_the_result(flow: AgentFlow) -> None:
    source = workflow(
        "shell-code",
        """
        inputs: {name: string}
        nodes:
          greet:
            type: code
            language: shell
            input: {name: "{{ inputs.name }}"}
            code: |
              read -r line
              printf '{"stdin": %s, "file": %s}' "$line" "$(cat input.json)"
        outputs: {greeting: "{{ greet }}"}
        """,
    )
    run = await run_source(flow, source, {"name": "Ada"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"greeting": {"stdin": {"name": "Ada"}, "file": {"name": "Ada"}}}


async def test_a_program_from_a_file_beside_the_workflow(flow: AgentFlow, tmp_path: Path) -> None:
    (tmp_path / "double.py").write_text("result = inputs['x'] * 2\n")
    path = tmp_path / "file-code.yaml"
    path.write_text(
        workflow(
            "file-code",
            """
            inputs: {x: integer}
            nodes:
              double: {type: code, file: double.py}
            outputs: {x: "{{ double }}"}
            """,
        )
    )
    version = flow.save_workflow_file(str(path))
    flow.grant_version(version, by="test:person")
    run = flow.submit(version, {"x": 21})
    await flow.executor.run(run.id)
    record = flow.store.get_run(run.id)
    assert record is not None and record.status == "succeeded", record and record.error
    assert record.outputs == {"x": 42}
    (call,) = events(flow, run.id, "tool_call")
    assert call["arguments"]["file"] == "double.py"


async def test_an_exception_fails_the_node_with_the_programs_traceback(flow: AgentFlow) -> None:
    source = workflow(
        "raising-code",
        """
        nodes:
          broken: {type: code, code: "x = {}\\nresult = x['missing']"}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "KeyError: 'missing'" in (run.error or "")
    assert "<node broken>" in (run.error or ""), "the traceback points at the node's own lines"
    assert node_statuses(flow, run.id) == {"broken": ["failed"]}


async def test_limits_from_the_yaml_stop_the_program(flow: AgentFlow) -> None:
    source = workflow(
        "slow-code",
        """
        nodes:
          forever:
            type: code
            code: "import time\\ntime.sleep(1e9)"
            limits: {wall: 2s}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "wall-clock limit (limits.wall)" in (run.error or "")


async def test_a_result_that_is_not_json_is_a_clear_error(flow: AgentFlow) -> None:
    source = workflow("set-code", "nodes:\n  s: {type: code, code: 'result = {1, 2}'}\n")
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "the result is not JSON" in (run.error or "")


async def test_the_output_shape_is_checked(flow: AgentFlow) -> None:
    source = workflow(
        "shape-code",
        """
        nodes:
          s: {type: code, code: "result = {'sum': 'many'}", output: {sum: number}}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "sum does not match `output`" in (run.error or "")


async def test_limits_over_the_operators_maximum_are_refused(home: Path, fake_llm: FakeLLM) -> None:
    settings = dataclasses.replace(fake_settings(home, fake_llm), sandbox="bwrap", sandbox_max={"memory": 512})
    flow = AgentFlow.open(settings)
    try:
        source = workflow("greedy-code", "nodes:\n  g: {type: code, code: 'result = 1', limits: {memory: 1g}}\n")
        run = await run_source(flow, source)
        assert run.status == "failed"
        assert "limit memory=1024 is over the operator's maximum 512 (AGENTFLOW_SANDBOX_MAX)" in (run.error or "")
        assert events(flow, run.id, "tool_call") == [], "nothing ran"
    finally:
        flow.close()


async def test_code_needs_a_persons_grant(flow: AgentFlow) -> None:
    version = flow.save_workflow(SUM)
    review = flow.grants.review(flow.load(version.source))
    assert review.missing == Capabilities(code=True)
    assert "code execution in the sandbox" in review.missing.describe()
    with pytest.raises(NeedsGrantError, match="needs a person's grant before it can run: code execution"):
        flow.submit(version, {"numbers": [1]})
    flow.grant_version(version, by="test:person")
    assert flow.grants.review(flow.load(version.source)).missing == Capabilities()


async def test_with_no_sandbox_the_node_refuses_and_says_how_to_get_one(
    flow: AgentFlow, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agentflow.sandbox import select

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no runsc, no docker on it
    monkeypatch.setattr(select, "_opened", {})  # forget the backend probed earlier in this process
    try:
        run = await run_source(flow, SUM, {"numbers": [1, 2]})
    finally:
        monkeypatch.undo()
    assert run.status == "failed"
    assert "cannot run its code" in (run.error or "")
    assert "bubblewrap" in (run.error or "")
    assert events(flow, run.id, "tool_call") == [], "nothing ran, nowhere"


async def test_bad_code_nodes_are_refused_at_validation(flow: AgentFlow) -> None:
    cases = {
        "nodes:\n  c: {type: code}\n": "exactly one of `code` (inline) or `file`",
        "nodes:\n  c: {type: code, code: x, file: y.py}\n": "exactly one of `code` (inline) or `file`",
        "nodes:\n  c: {type: code, file: ../../etc/passwd}\n": "must be a relative path",
        "nodes:\n  c: {type: code, code: x, language: ruby}\n": "python",
        "nodes:\n  c: {type: code, code: x, limits: {memory: lots}}\n": "'lots' is not a size",
        "nodes:\n  c: {type: code, code: x, limits: {wall: forever}}\n": "'forever' is not a duration",
        "nodes:\n  c: {type: code, code: x, limits: {gpu: 1}}\n": "gpu",
    }
    for body, message in cases.items():
        with pytest.raises(SpecErrors) as caught:
            flow.load(workflow("bad-code", body))
        assert message in str(caught.value), (body, str(caught.value))


async def test_an_agent_runs_model_written_python_in_the_sandbox(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    source = workflow(
        "interpreter",
        """
        inputs: {question: string}
        nodes:
          solve:
            type: agent
            instructions: Answer with Python.
            input: "{{ inputs.question }}"
            tools: [python, write_file]
        outputs: {answer: "{{ solve }}"}
        """,
    )
    fake_llm.enqueue(ToolCalls([("python", {"code": "import math\nprint(math.factorial(20))\nresult = 20"})]))
    fake_llm.enqueue(Text("20! is 2432902008176640000"))
    run = await run_source(flow, source, {"question": "What is 20 factorial?"})
    assert run.status == "succeeded", run.error
    (call,) = [event for event in events(flow, run.id, "tool_call") if event["tool"] == "python"]
    assert call["result"] == {"output": "2432902008176640000\n", "result": 20}
    tool_message = next(m for m in fake_llm.requests[-1]["messages"] if m["role"] == "tool")
    assert json.loads(tool_message["content"])["output"].strip() == "2432902008176640000"


async def test_the_python_tool_shares_the_workflows_workspace(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    source = workflow(
        "workspace-code",
        """
        nodes:
          work: {type: agent, instructions: Use files., tools: [python]}
        """,
    )
    fake_llm.enqueue(ToolCalls([("python", {"code": "open('notes.txt', 'w').write('kept')"})]))
    fake_llm.enqueue(Text("done"))
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert (flow.settings.workspaces / "workspace-code" / "notes.txt").read_text() == "kept"
