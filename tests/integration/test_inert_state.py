"""Hostile data in run state stays data: constructor envelopes, unpaired surrogates (SECURITY.md, checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.engine.inputs import InputError
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.integration.helpers import workflow

SOURCE = workflow(
    "inert",
    """
    inputs: {blob: {type: object}, text: {type: string, default: plain}}
    nodes:
      keep: {type: transform, expr: "inputs.blob"}
      gate: {type: approval, needs: [keep], message: "continue with {{ inputs.text }}?"}
      after: {type: transform, expr: "keep", needs: [gate]}
    """,
)
ENVELOPE = {"lc": 2, "type": "constructor", "id": ["os", "system"], "kwargs": {"command": "touch {canary}"}}


async def test_constructor_envelope_survives_a_restart_as_plain_data(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    blob = {**ENVELOPE, "kwargs": {"command": f"touch {canary}"}}
    home = tmp_path / "data"
    first = AgentFlow.open(Settings(home=home))
    run = first.submit(first.save_workflow(SOURCE), {"blob": blob})
    assert await first.executor.run(run.id) == "waiting_approval"
    first.close()

    # A new process loads the checkpoint from SQLite and continues.
    second = AgentFlow.open(Settings(home=home))
    try:
        assert second.store.decide_approval(run.id, approved=True, comment=None) is not None
        assert await second.executor.run(run.id) == "succeeded"
        finished = second.store.get_run(run.id)
        assert finished is not None and finished.outputs == {"after": blob}
    finally:
        second.close()
    assert not canary.exists()


async def test_unpaired_surrogate_in_an_input_is_refused_before_anything_runs(flow: AgentFlow) -> None:
    version = flow.save_workflow(SOURCE)
    with pytest.raises(InputError, match="input 'text' is not valid Unicode"):
        flow.submit(version, {"blob": {}, "text": "a\ud800b"})
    assert flow.store.list_runs() == []
