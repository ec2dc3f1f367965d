"""A deployed workflow's A2A agent card: who it is, its one skill, where to call it and how to authenticate."""

from __future__ import annotations

from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)

from agentflow.spec.models import Workflow
from agentflow.store.base import WorkflowVersion
from agentflow.versions import label

A2A_PREFIX = "/a2a"
PROTOCOL_VERSION = "1.0"
BEARER = "bearer"
MODES = ["text/plain", "application/json"]


def agent_path(workflow: str) -> str:
    """The JSON-RPC endpoint's path; the cards are under its `.well-known/`."""
    return f"{A2A_PREFIX}/{workflow}/"


def describe_inputs(workflow: Workflow) -> str:
    """The inputs in one sentence, as a caller needs them: `ticket (string)`, `amount (number, default 120)`."""
    parts = []
    for name, spec in workflow.spec.inputs.items():
        detail = spec.type if spec.is_required else f"{spec.type}, default {spec.default!r}"
        described = f"{name} ({detail})"
        parts.append(f"{described}: {spec.description}" if spec.description else described)
    return "; ".join(parts)


def how_to_call(workflow: Workflow) -> str:
    """What a message must carry to start this workflow."""
    inputs = workflow.spec.inputs
    if not inputs:
        return "It takes no inputs: any message starts it."
    text = single_text_input(workflow)
    fields = describe_inputs(workflow)
    if text is not None:
        return f"Send the {text} as the message text, or a data part with the inputs ({fields})."
    return f"Send a data part whose keys are the inputs: {fields}."


def single_text_input(workflow: Workflow) -> str | None:
    """The input a plain text message fills: the one required input if it is a string, else the only string input."""
    inputs = workflow.spec.inputs
    required = [name for name, spec in inputs.items() if spec.is_required]
    if required:
        return required[0] if len(required) == 1 and inputs[required[0]].type == "string" else None
    strings = [name for name, spec in inputs.items() if spec.type == "string"]
    return strings[0] if len(strings) == 1 else None


def workflow_card(workflow: Workflow, stored: WorkflowVersion, *, base_url: str, bearer: bool) -> AgentCard:
    """The card for `stored`, served at `base_url`; with `bearer`, calls need the API's bearer token."""
    base = base_url.rstrip("/")
    description = workflow.metadata.description or f"The AgentFlow workflow '{workflow.name}'."
    card = AgentCard(
        name=workflow.name,
        description=description,
        version=label(stored),
        supported_interfaces=[
            AgentInterface(
                url=base + agent_path(workflow.name), protocol_binding="JSONRPC", protocol_version=PROTOCOL_VERSION
            )
        ],
        provider=AgentProvider(organization="AgentFlow", url=base),
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=MODES,
        default_output_modes=MODES,
        skills=[
            AgentSkill(
                id=workflow.name,
                name=workflow.name,
                description=f"{description} {how_to_call(workflow)}",
                tags=list(workflow.metadata.tags) or [workflow.name],
                input_modes=MODES,
                output_modes=MODES,
            )
        ],
    )
    if bearer:
        card.security_schemes[BEARER].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    description="AgentFlow's API token (AGENTFLOW_API_TOKEN, or the token printed at start-up)",
                )
            )
        )
        card.security_requirements.append(SecurityRequirement(schemes={BEARER: StringList()}))
    return card
