"""`workflow` nodes in a lone file: the model's checks, and the one cycle a file shows by itself."""

from __future__ import annotations

import pytest

from agentflow.spec.errors import SpecErrors
from agentflow.spec.models import WorkflowNode
from agentflow.spec.validate import load_workflow


def doc(nodes: str, name: str = "caller") -> str:
    return f"apiVersion: agentflow/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  nodes:\n{nodes}"


def errors(source: str) -> str:
    with pytest.raises(SpecErrors) as raised:
        load_workflow(source, "w.yaml")
    return str(raised.value)


def test_a_lone_file_may_name_a_workflow_it_cannot_see() -> None:
    workflow = load_workflow(
        doc("    call: {type: workflow, workflow: other, version: 3, inputs: {text: '{{ inputs.x }}'}}\n").replace(
            "spec:\n", "spec:\n  inputs: {x: string}\n"
        )
    )
    node = workflow.spec.nodes["call"]
    assert isinstance(node, WorkflowNode)
    assert (node.workflow, node.version, node.inputs) == ("other", 3, {"text": "{{ inputs.x }}"})


def test_a_workflow_calling_itself_is_refused_even_alone() -> None:
    text = errors(doc("    call: {type: workflow, workflow: caller}\n"))
    assert "w.yaml:6:28: workflow 'caller' calls itself in node 'call'; a cycle never ends" in text


def test_bad_fields_are_located() -> None:
    text = errors(doc("    call: {type: workflow, workflow: Not A Slug, version: 0, input: {}}\n"))
    assert "unknown key 'input' in node 'call' (workflow); did you mean 'inputs'?" in text
    assert "'version' in node 'call' (workflow) should be greater than or equal to 1" in text
    assert "'workflow' in node 'call' (workflow) should match pattern" in text


def test_templates_in_inputs_are_checked() -> None:
    text = errors(doc("    call: {type: workflow, workflow: other, inputs: {text: '{{ drafts }}'}}\n"))
    assert "'inputs.text' of node 'call' (workflow) reads 'drafts'" in text
