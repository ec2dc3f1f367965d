"""Workflow validation: every problem reported at once, at file:line:column, with a fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentflow.spec.errors import SpecError, SpecErrors
from agentflow.spec.loader import MAX_FILE_BYTES
from agentflow.spec.models import LLMNode, Workflow
from agentflow.spec.validate import BUILTIN_TOOL_NAMES, load_workflow, load_workflow_file

ROOT = Path(__file__).resolve().parents[2]
BAD = Path(__file__).parent / "bad_workflows"
EXPECT = re.compile(r"^# expect: (\d+):(\d+): (.+)$", re.MULTILINE)
CANARY = Path("/tmp/agentflow-canary-pwned")

HEADER = "apiVersion: agentflow/v1\nkind: Workflow\nmetadata:\n  name: test\nspec:\n"
TRIAGE = (
    HEADER
    + """\
  inputs:
    ticket: {type: string, description: the customer's message}
  defaults:
    model: ollama/llama3.2
    retry: {attempts: 3, backoff: 2.0}
    timeout: 60s
  budget: {usd: 0.50, tokens: 50000, steps: 200, wall: 10m}
  permissions: {egress: [tracker.example.com]}
  nodes:
    classify:
      type: llm
      prompt: "Classify this ticket: {{ inputs.ticket }}"
      output:
        category: {type: string, enum: [billing, bug, other]}
        topics: {type: array, items: {type: string}}
    research:
      type: map
      needs: [classify]
      over: classify.topics
      node: {type: tool, tool: http_request, args: {url: "https://example.com/?q={{ item }}&n={{ index }}"}}
    route:
      type: switch
      needs: [classify]
      cases:
        - when: "classify.category == 'bug'"
          goto: escalate
      default: draft
    escalate:
      type: tool
      tool: http_request
      args: {method: POST, url: "${env:TRACKER_URL}", json: {title: "{{ inputs.ticket }}"}}
    draft:
      type: agent
      needs: [research]
      model: [openai/gpt-4o-mini, ollama/llama3.2]
      instructions: "Draft a reply using {{ research }} and {{ review.feedback }}"
      tools: [http_request]
    review:
      type: llm
      needs: [draft]
      prompt: "Is this reply polite and correct? {{ draft }}"
      output: {ok: {type: boolean}, feedback: {type: string}}
      loop: {back_to: draft, until: "review.ok", max: 3}
    approve:
      type: approval
      needs: [review]
      message: "Send this reply?\\n{{ draft }}"
  outputs:
    reply: "{{ draft }}"
  triggers:
    - webhook: {secret: "${env:HOOK_SECRET}"}
    - schedule: {cron: "0 9 * * 1-5", inputs: {ticket: daily digest}}
"""
)


def errors_of(text: str, **options: object) -> list[SpecError]:
    with pytest.raises(SpecErrors) as caught:
        load_workflow(text, "flow.yaml", **options)  # type: ignore[arg-type]
    return caught.value.errors


def only_error(text: str, **options: object) -> SpecError:
    errors = errors_of(text, **options)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def nodes(body: str, inputs: str = "") -> str:
    """A workflow with the given (indented) node definitions."""
    return HEADER + inputs + "  nodes:\n" + body


def test_a_full_workflow_validates() -> None:
    workflow = load_workflow(TRIAGE, "triage.yaml", known_tools=BUILTIN_TOOL_NAMES)
    assert isinstance(workflow, Workflow)
    assert workflow.name == "test"
    assert isinstance(workflow.spec.nodes["classify"], LLMNode)


def test_error_format() -> None:
    error = SpecError("flow.yaml", 3, 7, "unknown key 'promt'")
    assert str(error) == "flow.yaml:3:7: unknown key 'promt'"
    both = SpecErrors([error, SpecError("flow.yaml", 9, 1, "second")])
    assert str(both) == "flow.yaml:3:7: unknown key 'promt'\nflow.yaml:9:1: second"
    assert both.errors[1].line == 9


def corpus() -> list[Path]:
    return sorted(BAD.glob("*.yaml"))


def test_corpus_is_present() -> None:
    names = {path.stem for path in corpus()}
    assert {"syntax_error", "unknown_key", "unknown_need", "unbounded_cycle", "python_tag", "alias_bomb"} <= names
    assert {"duplicate_keys", "jmespath_error", "undeclared_input", "env_in_prompt"} <= names


@pytest.mark.parametrize("path", corpus(), ids=lambda path: path.stem)
def test_bad_workflow_corpus(path: Path) -> None:
    expected = [(int(line), int(column), fragment) for line, column, fragment in EXPECT.findall(path.read_text())]
    assert expected, f"{path.name} needs a '# expect: LINE:COLUMN: fragment' header"
    CANARY.unlink(missing_ok=True)
    with pytest.raises(SpecErrors) as caught:
        load_workflow_file(path, known_tools=BUILTIN_TOOL_NAMES)
    errors = caught.value.errors
    assert [(error.line, error.column) for error in errors] == [(line, column) for line, column, _ in expected], str(
        caught.value
    )
    for error, (_, _, fragment) in zip(errors, expected, strict=True):
        assert error.file == str(path)
        assert fragment in error.message
    assert not CANARY.exists()


def test_deep_nesting_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(HEADER + "  inputs: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecErrors) as caught:
        load_workflow_file(path)
    [error] = caught.value.errors
    # Where level 65 opens (the document and `spec` are levels 1 and 2): AgentFlow's limit, not libyaml's 1,000.
    assert (error.file, error.line, error.column) == (str(path), 6, len("  inputs: ") + 63)
    assert error.message.startswith("nesting is deeper than 64 levels; flatten the structure")


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(HEADER + "# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(SpecErrors) as caught:
        load_workflow_file(path)
    [error] = caught.value.errors
    assert (error.file, error.line, error.column) == (str(path), 1, 1)
    assert f"larger than {MAX_FILE_BYTES} bytes" in error.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors, match="cannot read the workflow file"):
        load_workflow_file(tmp_path / "nope.yaml")


def test_several_errors_are_reported_at_once() -> None:
    text = nodes(
        """\
    classify:
      type: llm
      promt: hi
    draft:
      type: llm
      needs: [classify]
      prompt: "{{ inputs.tiket }} ${env:KEY}"
    route:
      type: switch
      cases: [{when: "draft ==", goto: classify}]
""",
        inputs="  inputs: {ticket: string}\n",
    )
    errors = errors_of(text)
    assert [(error.line, error.column) for error in errors] == [(10, 7), (14, 7), (14, 7), (17, 16)]
    messages = [error.message for error in errors]
    assert messages[0] == "unknown key 'promt' in node 'classify' (llm); did you mean 'prompt'?"
    assert "input 'tiket'" in messages[1] or "input 'tiket'" in messages[2]
    assert any("secrets never reach the model" in message for message in messages[1:3])
    assert "invalid JMESPath in 'cases[0].when' of node 'route' (switch)" in messages[3]


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    error = only_error(nodes("    a: {type: transform, expr: inputs, zzz: 1}\n"))
    assert error.message.startswith("unknown key 'zzz' in node 'a' (transform); valid keys are: ")
    assert "expr" in error.message and "needs" in error.message


def test_unknown_key_in_nested_models() -> None:
    error = only_error(nodes("    a:\n      type: llm\n      prompt: hi\n      retry: {attempt: 2}\n"))
    assert (error.line, error.column) == (10, 15)
    assert error.message == "unknown key 'attempt' in retry of node 'a' (llm); did you mean 'attempts'?"


def test_unknown_key_in_a_maps_inner_node() -> None:
    text = nodes(
        "    m:\n      type: map\n      over: inputs.list\n      node: {type: llm, promt: hi}\n",
        "  inputs: {list: array}\n",
    )
    error = only_error(text)
    assert error.line == 11
    assert error.message == "unknown key 'promt' in the inner node of map 'm' (llm); did you mean 'prompt'?"


def test_a_tool_nodes_tool_key_is_not_mistaken_for_its_type() -> None:
    error = only_error(nodes("    call:\n      type: tool\n      tool: http_request\n      args: [1]\n"))
    assert (error.line, error.column) == (10, 7)
    assert error.message == "'args' in node 'call' (tool) should be a mapping"


def test_missing_type() -> None:
    error = only_error(nodes("    a: {prompt: hi}\n"))
    assert error.message.startswith("node 'a' needs 'type': one of llm, agent, tool")


def test_missing_api_version() -> None:
    error = only_error("kind: Workflow\nmetadata: {name: a}\nspec:\n  nodes: {a: {type: llm, prompt: hi}}\n")
    assert error.message == "the workflow needs 'apiVersion': write `apiVersion: agentflow/v1` at the top"


def test_bad_metadata_name_suggests_a_slug() -> None:
    text = "apiVersion: agentflow/v1\nmetadata: {name: My Flow}\nspec:\n  nodes: {a: {type: llm, prompt: hi}}\n"
    assert "e.g. 'my-flow'" in only_error(text).message


def test_value_errors_name_the_field() -> None:
    error = only_error(HEADER + "  budget: {wall: soon}\n  nodes: {a: {type: llm, prompt: hi}}\n")
    assert (error.line, error.column) == (6, 12)
    assert error.message.startswith("'wall' in spec.budget: 'soon' is not a duration")


def test_union_errors_are_merged() -> None:
    error = only_error(HEADER + "  defaults: {model: 5}\n  nodes: {a: {type: llm, prompt: hi}}\n")
    assert error.message == "'model' in spec.defaults should be a valid string or a valid list"


def test_not_a_mapping() -> None:
    assert "a workflow is a mapping" in only_error("- just\n- a list\n").message


@pytest.mark.parametrize(
    ("node_id", "fragment"),
    [
        ("my-node", "use 'my_node'"),
        ("1st", "use 'node_1st'"),
        ("inputs", "node id 'inputs' is reserved"),
        ("item", "rename it, e.g. 'item_node'"),
    ],
)
def test_node_ids(node_id: str, fragment: str) -> None:
    error = only_error(nodes(f"    {node_id}: {{type: llm, prompt: hi}}\n"))
    assert (error.line, error.column) == (7, 5)
    assert fragment in error.message


def test_item_and_index_inside_a_map_only() -> None:
    body = """\
    m:
      type: map
      over: "[inputs.a, item]"
      node: {type: llm, prompt: "{{ item }} #{{ index }}"}
"""
    error = only_error(nodes(body, "  inputs: {a: string}\n"))
    assert error.line == 10
    assert "'over' of node 'm' (map) reads 'item'" in error.message


def test_unknown_root_suggests_a_node() -> None:
    error = only_error(nodes("    classify: {type: llm, prompt: hi}\n    b: {type: transform, expr: clasify.x}\n"))
    assert error.message == (
        "'expr' of node 'b' (transform) reads 'clasify', which is not an input, a node id or item/index; "
        "did you mean 'classify'?"
    )


def test_double_quoted_text_in_a_comparison_gets_a_hint() -> None:
    body = "    a: {type: llm, prompt: hi}\n    b: {type: transform, expr: 'a == \"bug\"'}\n"
    assert "quote it with single quotes: 'bug'" in only_error(nodes(body)).message


def test_undeclared_input_without_close_match() -> None:
    error = only_error(nodes("    a: {type: llm, prompt: '{{ inputs.zzz }}'}\n"))
    assert error.message.endswith("is not declared in spec.inputs; declare it under spec.inputs")


def test_outputs_are_checked() -> None:
    text = nodes("    a: {type: llm, prompt: hi}\n") + "  outputs:\n    reply: '{{ b }}'\n    key: '${env:X}'\n"
    errors = errors_of(text)
    assert [error.line for error in errors] == [9, 10]
    assert "'spec.outputs.reply' reads 'b'" in errors[0].message
    assert "secrets never reach the model" in errors[1].message


def test_env_is_allowed_in_tool_args_and_webhook_secret() -> None:
    text = nodes(
        "    call: {type: tool, tool: http_request, args: {url: 'https://a.example', headers: {a: '${env:TOKEN}'}}}\n"
        "    m: {type: map, over: '[`1`]', node: {type: tool, tool: calculator, args: {k: '${env:K}'}}}\n"
    )
    load_workflow(text + "  triggers:\n    - webhook: {secret: '${env:HOOK}'}\n")


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        ("{type: agent, instructions: '${env:K}'}", "secrets never reach the model"),
        ("{type: agent, instructions: hi, input: '${env:K}'}", "secrets never reach the model"),
        ("{type: approval, message: '${env:K}'}", "secrets never reach the model"),
        ("{type: llm, prompt: hi, system: '${env:K}'}", "secrets never reach the model"),
        ("{type: llm, prompt: hi, model: '${env:K}'}", "resolved only in tool args"),
        ("{type: tool, tool: http_request, args: {url: '${env:bad-name}'}}", "malformed environment reference"),
    ],
)
def test_env_is_refused_elsewhere(node: str, fragment: str) -> None:
    error = only_error(nodes(f"    a: {node}\n"))
    assert error.line == 7
    assert fragment in error.message


def test_webhook_secret_must_be_an_env_reference() -> None:
    text = nodes("    a: {type: llm, prompt: hi}\n") + "  triggers:\n    - webhook: {secret: hunter2}\n"
    error = only_error(text)
    assert (error.line, error.message) == (
        9,
        "write the webhook secret as ${env:NAME}; secrets are never written in YAML",
    )


def test_tool_names_are_checked_when_known() -> None:
    text = nodes(
        "    a: {type: agent, instructions: hi, tools: [http_reqest, calculator]}\n"
        "    b: {type: tool, tool: web_search}\n"
    )
    load_workflow(text)  # known_tools=None skips the check
    errors = errors_of(text, known_tools=BUILTIN_TOOL_NAMES)
    assert [error.message for error in errors] == [
        "unknown tool 'http_reqest'; did you mean 'http_request'?",
        "unknown tool 'web_search'; available tools are: calculator, current_time, http_request, json_query",
    ]


def test_graph_problems_are_positioned() -> None:
    body = "    a: {type: llm, prompt: hi}\n    r:\n      type: switch\n      cases:\n        - {when: a, goto: b}\n"
    error = only_error(nodes(body))
    assert (error.line, error.column) == (11, 21)
    assert "goto target 'b' is not a node of this workflow" in error.message


def test_docs_examples_validate() -> None:
    text = (ROOT / "docs" / "workflow-spec.md").read_text()
    examples = [block for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "apiVersion:" in block]
    assert examples
    for example in examples:
        load_workflow(example, "docs/workflow-spec.md", known_tools=BUILTIN_TOOL_NAMES)


def test_a_maps_inner_node_type_is_limited() -> None:
    text = nodes(
        "    m:\n      type: map\n      over: '[`1`]'\n      node: {type: switch, cases: [{when: item, goto: m}]}\n"
    )
    error = only_error(text)
    assert (error.line, error.column) == (10, 14)
    assert error.message == (
        "a map's inner node cannot be a switch node; use one of llm, agent, tool, transform, code, remote"
    )
