"""`remote` nodes in a file: the model's checks with located messages, and the capabilities they need."""

from __future__ import annotations

import pytest

from agentflow.spec.errors import SpecErrors
from agentflow.spec.models import MapNode, RemoteNode
from agentflow.spec.validate import load_workflow
from agentflow.trust.capabilities import Capabilities, derive


def doc(nodes: str) -> str:
    return (
        "apiVersion: agentflow/v1\nkind: Workflow\nmetadata: {name: caller}\nspec:\n"
        f"  inputs: {{text: string}}\n  nodes:\n{nodes}"
    )


def errors(source: str) -> str:
    with pytest.raises(SpecErrors) as raised:
        load_workflow(source, "w.yaml")
    return str(raised.value)


def test_a_remote_node_by_skill_with_its_defaults() -> None:
    workflow = load_workflow(doc("    ask: {type: remote, skill: translate}\n"))
    node = workflow.spec.nodes["ask"]
    assert isinstance(node, RemoteNode)
    assert (node.agent, node.skill, node.input, node.data, node.fallback, node.timeout) == (
        None,
        "translate",
        None,
        None,
        True,
        None,
    )


def test_a_remote_node_by_name_with_text_data_and_retry() -> None:
    workflow = load_workflow(
        doc(
            "    ask:\n      type: remote\n      agent: reviewer\n      input: 'check {{ inputs.text }}'\n"
            "      data: {original: '{{ inputs.text }}', strict: true}\n      timeout: 5s\n"
            "      retry: {attempts: 2}\n      fallback: false\n"
        )
    )
    node = workflow.spec.nodes["ask"]
    assert isinstance(node, RemoteNode)
    assert (node.agent, node.input, node.fallback, node.timeout) == ("reviewer", "check {{ inputs.text }}", False, "5s")
    assert node.data == {"original": "{{ inputs.text }}", "strict": True}
    assert node.retry is not None and node.retry.attempts == 2


@pytest.mark.parametrize("target", ["agent: reviewer, skill: translate", "input: hi"])
def test_exactly_one_of_agent_or_skill(target: str) -> None:
    text = errors(doc(f"    ask: {{type: remote, {target}}}\n"))
    assert (
        "node 'ask' (remote): a remote node needs exactly one of `agent` (an agent's name) or `skill` "
        "(any agent with that skill)"
    ) in text


def test_unknown_keys_get_the_key_it_probably_meant() -> None:
    text = errors(doc("    ask: {type: remote, agent: reviewer, fallbak: false, inputs: {}}\n"))
    assert "unknown key 'fallbak' in node 'ask' (remote); did you mean 'fallback'?" in text
    assert "unknown key 'inputs' in node 'ask' (remote); did you mean 'input'?" in text


def test_bad_values_are_located() -> None:
    text = errors(doc("    ask: {type: remote, agent: '', timeout: soon, fallback: maybe, data: [a]}\n"))
    assert "'agent' in node 'ask' (remote) should have at least 1 character" in text
    assert "'soon' is not a duration" in text
    assert "'fallback' in node 'ask' (remote) should be a valid boolean" in text
    assert "'data' in node 'ask' (remote) should be a mapping" in text


def test_templates_in_input_and_data_are_checked() -> None:
    text = errors(doc("    ask: {type: remote, skill: s, input: '{{ inputs.txt }}', data: {x: '{{ nope.y }}'}}\n"))
    assert (
        "input 'txt' used in 'input' of node 'ask' (remote) is not declared in spec.inputs; did you mean 'text'?"
        in (text)
    )
    assert "'data.x' of node 'ask' (remote) reads 'nope'" in text


def test_secrets_never_go_to_an_agent() -> None:
    text = errors(doc("    ask: {type: remote, skill: s, input: 'key ${env:API_KEY}'}\n"))
    assert "${env:...} is not allowed here" in text


def test_a_map_calls_an_agent_per_item() -> None:
    inner = "{type: remote, skill: s, input: '{{ item }}'}"
    workflow = load_workflow(doc(f"    each:\n      type: map\n      over: '[inputs.text]'\n      node: {inner}\n"))
    node = workflow.spec.nodes["each"]
    assert isinstance(node, MapNode) and isinstance(node.node, RemoteNode)
    assert derive(workflow).remote_skills == {"s"}


def test_agents_and_skills_called_are_capabilities() -> None:
    nodes = [
        "a: {type: remote, agent: reviewer}",
        "b: {type: remote, skill: translate}",
        "c: {type: remote, skill: ocr}",
    ]
    workflow = load_workflow(doc("".join(f"    {node}\n" for node in nodes)))
    wanted = derive(workflow)
    assert (wanted.remote_agents, wanted.remote_skills) == ({"reviewer"}, {"translate", "ocr"})
    assert wanted.lines() == ["remote agent reviewer", "remote skill ocr", "remote skill translate"]
    assert wanted and not Capabilities()
    granted = Capabilities(remote_skills=frozenset({"translate"}))
    missing = wanted.beyond(granted)
    assert missing.describe() == "remote agent reviewer; remote skill ocr"
    assert not wanted.beyond(wanted | granted)
    assert Capabilities.from_dict(wanted.to_dict()) == wanted
    assert "remote_agents" not in Capabilities(code=True).to_dict()  # grants stored before remote nodes stay equal
