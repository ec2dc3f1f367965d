"""`memory:` in the language: what an `llm` or `agent` node recalls before it runs and saves after it succeeds.

```yaml
spec:
  memory:                                  # the default for every llm/agent node without its own
    recall: {scope: workflow, top_k: 5}
  nodes:
    answer:
      type: llm
      prompt: "{{ inputs.question }}"
      memory:
        recall:
          scope: [workflow, user]          # one scope or several
          query: "{{ inputs.question }}"   # default: the node's prompt (llm) or input (agent)
          top_k: 5
          max_tokens: 400                  # the injected block's budget
        save:
          text: "Q: {{ inputs.question }} A: {{ output }}"   # `output`: this node's result
          tags: [faq]
          ttl: 30d
        # or `save: auto`: a model call extracts facts and reconciles them with the ones already kept
```

Scopes are names, not places: `workflow` (this workflow's), `agent` (this node's, within this workflow),
`user` and `session` (the chat or channel person, or the chat session, that started the run — within this
workflow), and `global`, shared by every workflow: reading or writing it is a capability a person grants.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

Duration = Annotated[str | float, Field(description="Seconds, or a string such as 30s, 10m, 12h, 30d")]
ScopeKind = Literal["workflow", "agent", "user", "session", "global"]
SHARED_SCOPES = frozenset({"global"})
"""Scopes other workflows also read and write: a capability to grant."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Recall(_Strict):
    scope: list[ScopeKind] = Field(
        default_factory=lambda: list[ScopeKind](["workflow"]), description="Where to look: one scope or a list of them"
    )
    query: str | None = Field(
        None, description="Template of the search text; default: the node's prompt (llm) or input (agent)"
    )
    top_k: int = Field(5, ge=1, le=50, description="At most this many memories")
    max_tokens: int = Field(500, ge=16, le=8000, description="Token budget of the injected block")

    @property
    def scopes(self) -> list[ScopeKind]:
        return list(dict.fromkeys(self.scope))

    @field_validator("scope", mode="before")
    @classmethod
    def _some_scope(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and not value:
            raise ValueError("name at least one scope: workflow, agent, user, session or global")
        return value


class Save(_Strict):
    text: str = Field(description="Template of what to keep; `output` is this node's result")
    scope: ScopeKind = "workflow"
    tags: list[str] = Field(default_factory=list, max_length=20)
    importance: float = Field(0.5, ge=0, le=1, description="0..1: more important memories rank higher")
    ttl: Duration | None = Field(None, description="Forget it after this long, e.g. 30d, 12h; default: never")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | float | None) -> str | float | None:
        from agentflow.spec.models import parse_duration  # models imports this module

        if isinstance(value, bool):
            raise ValueError("a duration is a number of seconds or a string such as 12h or 30d")
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not tag.strip() or len(tag) > 64:
                raise ValueError(f"tag {tag!r} must be 1-64 characters")
        return list(dict.fromkeys(value))


class AutoSave(_Strict):
    mode: Literal["auto"]
    scope: ScopeKind = "workflow"
    model: str | None = Field(None, description="The model that extracts facts; default: the node's model")


def _save_kind(value: Any) -> str:
    mode = value.get("mode") if isinstance(value, dict) else getattr(value, "mode", None)
    return "auto" if mode is not None else "text"


SaveConfig = Annotated[Annotated[Save, Tag("text")] | Annotated[AutoSave, Tag("auto")], Discriminator(_save_kind)]


class MemoryConfig(_Strict):
    recall: Recall | None = None
    save: SaveConfig | None = Field(
        None, description="`{text: ...}` keeps that text; `auto` lets a model extract and reconcile facts"
    )

    @field_validator("recall", mode="before")
    @classmethod
    def _recall_shorthand(cls, value: Any) -> Any:
        # `recall: true` recalls from the workflow's scope; `recall: user` from that scope.
        if value is True:
            return {}
        if value is False:
            return None
        if isinstance(value, str | list):
            return {"scope": value}
        return value

    @field_validator("save", mode="before")
    @classmethod
    def _save_shorthand(cls, value: Any) -> Any:
        if value == "auto":
            return {"mode": "auto"}
        if isinstance(value, str):
            return {"text": value}
        if isinstance(value, dict) and "text" not in value and "mode" not in value:
            raise ValueError('say what to keep: `save: {text: "{{ output }}"}`, or `save: auto` to extract facts')
        return value

    def scope_kinds(self) -> set[str]:
        kinds: set[str] = set(self.recall.scopes) if self.recall else set()
        if self.save is not None:
            kinds.add(self.save.scope)
        return kinds
