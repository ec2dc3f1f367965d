"""A node's prompt field as the model gets it: a template rendered, or a registry prompt loaded then rendered.

A registry template is rendered by the workflow's own template engine, so `{{ inputs.ticket }}` and
`{{ classify.label }}` mean what they mean in the YAML. MLflow's convention, `{{ticket}}` with a bare
variable name, works too: the run's inputs are in scope under their own names as well (a node id of the
same name wins). Pushing a workflow's inline prompts therefore changes nothing about what they render.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentflow.prompts.refs import is_ref, parse_ref
from agentflow.spec.expressions import ExpressionError, render

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext
    from agentflow.prompts.registry import LoadedPrompt


def as_text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


@dataclass(slots=True)
class Resolved:
    """The texts of a node's prompt fields, and the registry prompts they came from (main prompt first)."""

    texts: dict[str, str] = field(default_factory=dict)
    used: list[LoadedPrompt] = field(default_factory=list)

    @property
    def prompt_ref(self) -> str | None:
        """`triage.classify@3` (several joined by ', '), as LLMCalled records it; None when none was used."""
        return ", ".join(prompt.label for prompt in self.used) or None


async def resolve(ctx: RunContext, fields: dict[str, str | None], scope: dict[str, Any]) -> Resolved:
    """Render each field (None stays out); `prompts:/` fields are loaded from the registry first."""
    from agentflow.engine.nodes.base import NodeConfigError
    from agentflow.prompts.registry import PromptNotFound

    resolved = Resolved()
    for name, value in fields.items():
        if value is None:
            continue
        if not is_ref(value):
            resolved.texts[name] = as_text(render(value, scope))
            continue
        registry = ctx.services.prompts
        try:
            loaded = await asyncio.to_thread(registry.load, parse_ref(value))
        except PromptNotFound as exc:
            raise NodeConfigError(str(exc)) from None
        resolved.used.append(loaded)
        inputs = scope.get("inputs")
        registry_scope = {**inputs, **scope} if isinstance(inputs, dict) else scope
        try:
            resolved.texts[name] = as_text(render(loaded.template, registry_scope))
        except ExpressionError as exc:
            raise NodeConfigError(
                f"`{name}: {value.strip()}` loaded {loaded.label}, whose template does not render: {exc}; "
                "fix it in the registry (or push a corrected version) and move the alias"
            ) from None
    return resolved
