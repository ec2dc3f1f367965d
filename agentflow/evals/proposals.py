"""Proposals: a workflow version someone (an optimiser) suggests, kept until a person accepts it.

A proposal is a JSON file in `AGENTFLOW_HOME/proposals/ID.json`: the workflow and the version it
starts from, the node, the current and proposed prompts, the proposed YAML and its unified diff,
and the evaluations of both on the same cases. Nothing is saved as a version until `accept`, which
saves the proposed YAML (when its base is still the workflow's current version) as a new version;
that version then needs its grant like any other.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agentflow.chat.history import unified_diff
from agentflow.store.base import WorkflowVersion

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

FOLDER = "proposals"


class ProposalError(ValueError):
    """A proposal that does not exist, was already decided, or no longer applies."""


@dataclass(slots=True)
class Proposal:
    id: str
    workflow: str
    base_version: str
    base_number: int
    node: str
    optimizer: str
    current_prompt: str
    proposed_prompt: str
    proposed_source: str
    diff: str
    current: dict[str, Any]
    """The evaluation report of the current prompt (EvalReport.to_dict())."""
    proposed: dict[str, Any]
    created_at: float
    status: str = "proposed"  # proposed | accepted
    accepted_by: str | None = None
    accepted_at: float | None = None
    accepted_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scores(self) -> dict[str, dict[str, Any]]:
        """Current against proposed: pass rate and mean score per scorer."""
        return {
            side: {
                "pass_rate": report["aggregate"]["pass_rate"],
                "mean_scores": report["aggregate"]["mean_scores"],
                "cost_usd_total": report["aggregate"]["cost_usd_total"],
            }
            for side, report in (("current", self.current), ("proposed", self.proposed))
        }


def new_proposal(
    *,
    stored: WorkflowVersion,
    node: str,
    optimizer: str,
    current_prompt: str,
    proposed_prompt: str,
    proposed_source: str,
    current: dict[str, Any],
    proposed: dict[str, Any],
) -> Proposal:
    label = f"v{stored.number}" if stored.number else stored.version[:12]
    return Proposal(
        id=time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3),
        workflow=stored.name,
        base_version=stored.version,
        base_number=stored.number,
        node=node,
        optimizer=optimizer,
        current_prompt=current_prompt,
        proposed_prompt=proposed_prompt,
        proposed_source=proposed_source,
        diff=unified_diff(
            stored.source, proposed_source, before_label=f"{stored.name} {label}", after_label=f"{stored.name} proposed"
        ),
        current=current,
        proposed=proposed,
        created_at=time.time(),
    )


def folder(home: Path) -> Path:
    return home / FOLDER


def save(home: Path, proposal: Proposal) -> Path:
    path = folder(home) / f"{proposal.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(proposal.to_dict(), ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return path


def load(home: Path, proposal_id: str) -> Proposal:
    if not proposal_id or "/" in proposal_id or proposal_id.startswith("."):
        raise ProposalError(f"'{proposal_id}' is not a proposal id; list them with: agentflow optimize list")
    path = folder(home) / f"{proposal_id}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProposalError(f"no proposal '{proposal_id}'; list them with: agentflow optimize list") from None
    return Proposal(**data)


def listing(home: Path, workflow: str | None = None) -> list[Proposal]:
    """Every proposal kept (of `workflow`), newest first."""
    found = []
    for path in sorted(folder(home).glob("*.json"), reverse=True):
        proposal = load(home, path.stem)
        if workflow is None or proposal.workflow == workflow:
            found.append(proposal)
    return found


def accept(flow: AgentFlow, proposal_id: str, *, by: str) -> WorkflowVersion:
    """A person saves the proposed YAML as the workflow's new version (which needs its grant like any version)."""
    proposal = load(flow.settings.home, proposal_id)
    if proposal.status != "proposed":
        raise ProposalError(
            f"proposal {proposal_id} was already {proposal.status} by {proposal.accepted_by} "
            f"(version {proposal.accepted_version})"
        )
    current = flow.store.get_workflow(proposal.workflow)
    if current is None or current.version != proposal.base_version:
        raise ProposalError(
            f"'{proposal.workflow}' changed since this proposal (it starts from {proposal.base_version[:12]}); "
            f"run agentflow optimize {proposal.workflow} --node {proposal.node} again on the current version"
        )
    stored = flow.save_workflow(proposal.proposed_source)
    proposal.status, proposal.accepted_by = "accepted", by
    proposal.accepted_at, proposal.accepted_version = time.time(), stored.version
    save(flow.settings.home, proposal)
    return stored


def replace_prompt(source: str, node: str, field: str, prompt: str) -> str:
    """`source` with `spec.nodes.NODE.FIELD` set to `prompt`, the rest of the text untouched."""
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        value = _child(_child(_child(root, "spec"), "nodes"), node)
        scalar = _child(value, field)
    except (yaml.YAMLError, LookupError) as exc:
        raise ProposalError(f"cannot find spec.nodes.{node}.{field} in the workflow: {exc}") from None
    start, end = scalar.start_mark.index, scalar.end_mark.index
    original = source[start:end]
    ends_line = original.endswith("\n") or source[end : end + 1] in ("", "\n")
    text = json.dumps(prompt, ensure_ascii=False)  # a double-quoted YAML scalar, exact in any context
    if not value.flow_style and "\n" in prompt and ends_line:
        indent = " " * (_key_column(value, field) + 2)
        text = "|-\n" + "\n".join(indent + line if line else "" for line in prompt.split("\n"))
    if original.endswith("\n") and not text.endswith("\n"):
        text += "\n"  # the replaced block scalar owned its line break
    result = source[:start] + text + source[end:]
    check = yaml.safe_load(result)["spec"]["nodes"][node][field]
    if check != prompt:  # a corner of YAML we did not foresee: the quoted form is always exact
        result = source[:start] + json.dumps(prompt, ensure_ascii=False) + source[end:]
    return result


def _child(mapping: Any, key: str) -> Any:
    if not isinstance(mapping, yaml.MappingNode):
        raise LookupError(f"'{key}' is not under a mapping")
    for name, value in mapping.value:
        if name.value == key:
            return value
    raise LookupError(f"no key '{key}'")


def _key_column(mapping: Any, key: str) -> int:
    for name, _ in mapping.value:
        if name.value == key:
            return int(name.start_mark.column)
    return 0
