"""The workflow language (`apiVersion: agentflow/v1`) as pydantic models.

Every model forbids unknown keys: a typo is an error with a suggestion, never a
silently ignored setting. Expressions and templates are kept as strings here;
`agentflow.spec.validate` checks that they parse.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentflow.spec.memory import MemoryConfig

NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
RESERVED_IDS = frozenset({"inputs", "item", "index", "env", "loop"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from `90`, `90s`, `1.5m`, `500ms` or `2h`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a duration; write e.g. 30s, 500ms, 10m or 1h")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[str | float, Field(description="Seconds, or a string such as 30s, 500ms, 10m, 1h")]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str | int | float) -> int:
    """Bytes from `1048576`, `64k`, `256m`, `256MB`, `1g` or `1GiB` (powers of 1024)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = float(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a size; write e.g. 256m, 64k, 1g or a number of bytes")
        size = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()[:1]]
    if size < 1:
        raise ValueError("a size must be positive")
    return int(size)


Size = Annotated[str | int, Field(description="Bytes, or a string such as 64k, 256m, 1g")]
ModelRef = Annotated[
    str | list[str],
    Field(description="A LiteLLM model name (e.g. openai/gpt-4o-mini), or a list tried in order as a fallback chain"),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _check_duration(value: str | float | None) -> str | float | None:
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 30s, 500ms, 10m, 1h")
    if value is not None:
        parse_duration(value)
    return value


class Retry(Strict):
    attempts: int = Field(3, ge=1, le=20, description="Total attempts, the first included")
    backoff: float = Field(2.0, ge=1.0, le=10.0, description="Multiplier applied to the delay after each failure")
    delay: Duration = Field("1s", description="Wait before the second attempt")

    _delay = field_validator("delay")(_check_duration)


class Loop(Strict):
    back_to: str = Field(
        description="Id of the node the loop jumps back to; it and everything between it and this node run again"
    )
    until: str = Field(description="JMESPath over the run state; the loop stops when it is truthy")
    max: int = Field(
        ge=1, le=1000, description="Most times this node runs; the loop stops here even if `until` is still false"
    )


class FieldSchema(Strict):
    """A JSON-Schema subset for structured outputs and inputs."""

    type: Literal["string", "number", "integer", "boolean", "array", "object"] = "string"
    description: str | None = None
    enum: list[Any] | None = None
    items: FieldSchema | None = None
    properties: dict[str, FieldSchema] | None = None

    def to_json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.description:
            schema["description"] = self.description
        if self.enum is not None:
            schema["enum"] = self.enum
        if self.items is not None:
            schema["items"] = self.items.to_json_schema()
        if self.properties is not None:
            schema.update(object_schema(self.properties))
        return schema


def object_schema(properties: dict[str, FieldSchema]) -> dict[str, Any]:
    """JSON Schema of an object whose listed properties are all required."""
    return {
        "type": "object",
        "properties": {name: field.to_json_schema() for name, field in properties.items()},
        "required": list(properties),
        "additionalProperties": False,
    }


class InputSpec(Strict):
    type: Literal["string", "number", "integer", "boolean", "array", "object"] = "string"
    description: str | None = None
    default: Any = None
    enum: list[Any] | None = None
    required: bool | None = Field(None, description="Defaults to true when no default is given")

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class NodeBase(Strict):
    description: str | None = None
    needs: list[str] = Field(
        default_factory=list, description="Ids of nodes that must finish first (fan-in waits for all)"
    )
    retry: Retry | None = None
    timeout: Duration | None = Field(None, description="Per attempt")
    loop: Loop | None = None

    _timeout = field_validator("timeout")(_check_duration)

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


VARIANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
_PROMPT_REF = "or a registry prompt: prompts:/NAME@ALIAS or prompts:/NAME/VERSION (docs/prompts.md)"


class Variant(Strict):
    """An alternative a run may draw instead of the node's own settings (docs/variants.md)."""

    name: str = Field(description="Unique in the node; recorded on each run (letters, digits, '.', '_', '-')")
    weight: float = Field(1.0, gt=0, description="Share of runs, relative to the other variants' weights")
    model: ModelRef | None = Field(None, description="Instead of the node's model")
    temperature: float | None = Field(None, ge=0, le=2, description="Instead of the node's temperature")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(VARIANT_NAME_PATTERN, value):
            raise ValueError(
                f"'{value}' is not a variant name; write letters, digits, '.', '_' and '-' (at most 40), e.g. short"
            )
        return value


class LLMVariant(Variant):
    prompt: str | None = Field(None, description=f"Instead of the node's prompt: a template, {_PROMPT_REF}")
    system: str | None = Field(None, description="Instead of the node's system message")


class AgentVariant(Variant):
    instructions: str | None = Field(None, description=f"Instead of the node's instructions, {_PROMPT_REF}")
    input: str | None = Field(None, description="Instead of the node's input")


class LLMNode(NodeBase):
    type: Literal["llm"]
    prompt: str = Field(description=f"A template, {_PROMPT_REF}")
    system: str | None = None
    model: ModelRef | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    output: dict[str, FieldSchema] | None = Field(None, description="Structured output: property name -> schema")
    memory: MemoryConfig | None = Field(None, description="What to recall before the call and save after it")
    variants: list[LLMVariant] | None = Field(
        None, min_length=1, description="Alternatives drawn per run by weight (prompt, system, model, temperature)"
    )


class AgentNode(NodeBase):
    type: Literal["agent"]
    instructions: str = Field(description=f"A template, {_PROMPT_REF}")
    input: str | None = Field(None, description="The task given to the agent; defaults to the instructions alone")
    tools: list[str] = Field(default_factory=list)
    model: ModelRef | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_turns: int = Field(6, ge=1, le=100)
    output: dict[str, FieldSchema] | None = None
    memory: MemoryConfig | None = Field(None, description="What to recall before the agent runs and save after it")
    variants: list[AgentVariant] | None = Field(
        None, min_length=1, description="Alternatives drawn per run by weight (instructions, input, model, temperature)"
    )


class ToolNode(NodeBase):
    type: Literal["tool"]
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class TransformNode(NodeBase):
    type: Literal["transform"]
    expr: str = Field(description="JMESPath over the run state; its result is this node's output")


class Case(Strict):
    when: str
    goto: str


class SwitchNode(NodeBase):
    type: Literal["switch"]
    cases: list[Case] = Field(min_length=1)
    default: str | None = None


class ApprovalNode(NodeBase):
    type: Literal["approval"]
    message: str = "Continue?"


def _check_size(value: str | int | None) -> str | int | None:
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string such as 64k, 256m, 1g")
    if value is not None:
        parse_size(value)
    return value


class CodeLimits(Strict):
    """What one run of the code may use; unset ones take the sandbox's defaults, all capped by the operator."""

    memory: Size | None = Field(None, description="Memory, e.g. 256m (default 256m)")
    cpu: Duration | None = Field(None, description="CPU time over all threads, e.g. 10s (default 10s)")
    wall: Duration | None = Field(None, description="Wall-clock time, e.g. 30s (default 30s)")
    pids: int | None = Field(None, ge=1, le=4096, description="Processes and threads (default 64)")
    output: Size | None = Field(None, description="stdout and stderr, each (default 1m)")
    disk: Size | None = Field(None, description="The writable workspace (default 64m)")

    _durations = field_validator("cpu", "wall")(_check_duration)
    _sizes = field_validator("memory", "output", "disk")(_check_size)

    def asked(self) -> dict[str, float]:
        """In the sandbox's units: memory and disk in MB, cpu and wall in seconds, output in bytes."""
        asked: dict[str, float] = {}
        if self.memory is not None:
            asked["memory"] = parse_size(self.memory) / 1024**2
        if self.disk is not None:
            asked["disk"] = parse_size(self.disk) / 1024**2
        if self.output is not None:
            asked["output"] = float(parse_size(self.output))
        if self.cpu is not None:
            asked["cpu"] = parse_duration(self.cpu)
        if self.wall is not None:
            asked["wall"] = parse_duration(self.wall)
        if self.pids is not None:
            asked["pids"] = float(self.pids)
        return asked


class CodeNode(NodeBase):
    """Code run in the sandbox: no network, no host files, no secrets, bounded. The input arrives as JSON."""

    type: Literal["code"]
    language: Literal["python", "shell"] = "python"
    code: str | None = Field(None, description="The program, inline")
    file: str | None = Field(
        None, description="Or a file with the program, relative to the workflow's file (or its workspace)"
    )
    input: Any = Field(
        None,
        description=(
            "What the code receives as JSON (templates allowed); default: the results of `needs`, else the "
            "run's inputs. Python reads it as `inputs` (or `main(inputs)`); shell reads it on stdin."
        ),
    )
    limits: CodeLimits = Field(default_factory=lambda: CodeLimits())
    output: dict[str, FieldSchema] | None = Field(
        None, description="The result's shape, checked after the run: property -> schema, or just its type"
    )

    @field_validator("output", mode="before")
    @classmethod
    def _shorthand_output(cls, value: Any) -> Any:
        # `sum: number` is shorthand for `sum: {type: number}`.
        if isinstance(value, dict):
            return {key: {"type": spec} if isinstance(spec, str) else spec for key, spec in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> CodeNode:
        if (self.code is None) == (self.file is None):
            raise ValueError("a code node needs exactly one of `code` (inline) or `file`")
        if self.file is not None and (self.file.startswith("/") or ".." in self.file.replace("\\", "/").split("/")):
            raise ValueError(f"`file: {self.file}` must be a relative path inside the workflow's directory")
        return self


class WorkflowNode(NodeBase):
    """A sub-workflow: a stored workflow run as a run of its own; its outputs are this node's output."""

    type: Literal["workflow"]
    workflow: str = Field(pattern=SLUG_PATTERN, description="The stored workflow to run (its metadata.name)")
    version: int | None = Field(None, ge=1, description="Pin version N (v1, v2...); default: its current version")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="The child's inputs: input name -> template (e.g. '{{ draft.text }}')"
    )


class RemoteNode(NodeBase):
    """A registered A2A agent (agentflow/registry), chosen by name or by skill; its reply is this node's output."""

    type: Literal["remote"]
    agent: str | None = Field(None, min_length=1, description="The agent's name (the `name` on its card)")
    skill: str | None = Field(
        None, min_length=1, description="Or any agent with this skill (a skill's id, name or tag on its card)"
    )
    input: str | None = Field(
        None, description="The text sent (a template); default: the results of `needs`, else the run's inputs, as JSON"
    )
    data: dict[str, Any] | None = Field(
        None, description="Structured data sent with the text (a data part): key -> template"
    )
    fallback: bool = Field(
        True,
        description=(
            "When the chosen agent is unreachable (refused, timed out, 5xx), stale or offline, try the next "
            "healthy agent with the same name or skill"
        ),
    )
    timeout: Duration | None = Field(
        None,
        description=(
            "Per agent call (default 60s): an agent that does not answer in time is passed over like one that "
            "refuses; the node takes at most this times the number of agents tried"
        ),
    )

    @model_validator(mode="after")
    def _one_target(self) -> RemoteNode:
        if (self.agent is None) == (self.skill is None):
            raise ValueError(
                "a remote node needs exactly one of `agent` (an agent's name) or `skill` (any agent with that skill)"
            )
        return self


InnerNode = Annotated[
    LLMNode | AgentNode | ToolNode | TransformNode | CodeNode | RemoteNode, Field(discriminator="type")
]


class MapNode(NodeBase):
    type: Literal["map"]
    over: str = Field(description="JMESPath yielding the list to fan out over")
    node: InnerNode = Field(description="Run once per item; `item` and `index` are in scope")
    concurrency: int = Field(4, ge=1, le=256)


Node = Annotated[
    LLMNode
    | AgentNode
    | ToolNode
    | TransformNode
    | CodeNode
    | SwitchNode
    | MapNode
    | ApprovalNode
    | WorkflowNode
    | RemoteNode,
    Field(discriminator="type"),
]
NODE_TYPES = ("llm", "agent", "tool", "transform", "code", "switch", "map", "approval", "workflow", "remote")
FUTURE_NODE_TYPES: tuple[str, ...] = ()


class Defaults(Strict):
    model: ModelRef | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    retry: Retry | None = None
    timeout: Duration | None = None

    _timeout = field_validator("timeout")(_check_duration)


class Budget(Strict):
    steps: int | None = Field(None, ge=1, description="Node executions, retries and loop iterations included")
    tokens: int | None = Field(None, ge=1)
    usd: float | None = Field(None, gt=0)
    wall: Duration | None = Field(None, description="Running time, not counting waits for approval")
    daily_usd: float | None = Field(
        None, gt=0, description="Spend of all this workflow's runs per day; while spent, its runs are refused"
    )

    _wall = field_validator("wall")(_check_duration)


TRIGGER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
MISFIRE_POLICIES = ("skip", "once", "all")
_TriggerName = Annotated[
    str | None,
    Field(
        None,
        pattern=TRIGGER_NAME_PATTERN,
        description="Names the trigger (its URL, its secret, its schedule); default: its kind, then kind-2, kind-3...",
    ),
]


class WebhookTrigger(Strict):
    """Signed HTTP deliveries (Standard Webhooks) to POST /api/hooks/WORKFLOW[/NAME] start runs."""

    name: _TriggerName = None
    secret: str | None = Field(
        None,
        description="A ${env:NAME} reference to the signing secret (whsec_...); default: one generated at deploy",
    )
    inputs: dict[str, str] | None = Field(
        None,
        description=(
            "Input name -> JMESPath over the JSON body (e.g. ticket: issue.title); default: the body is the inputs"
        ),
    )
    wait: Duration | None = Field(
        None, description="Answer with the run's outputs when it ends within this time (a 202 with the run otherwise)"
    )
    rate: int = Field(600, ge=1, le=1_000_000, description="Deliveries accepted per minute (bursts up to it); then 429")

    _wait = field_validator("wait")(_check_duration)


class ScheduleTrigger(Strict):
    """Runs at the times of a cron expression, in a time zone; missed times are handled by `misfire`."""

    name: _TriggerName = None
    cron: str = Field(description="5 fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5'")
    timezone: str = Field("UTC", description="An IANA time zone, e.g. Europe/Paris; cron times are read in it")
    inputs: dict[str, Any] = Field(default_factory=dict)
    misfire: Literal["skip", "once", "all"] = Field(
        "once",
        description=(
            "Times missed while no server ran: skip them, run once for all of them (default), "
            "or run each (at most `catch_up`)"
        ),
    )
    catch_up: int = Field(10, ge=1, le=1000, description="With misfire: all, the most missed times run")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if len(value.split()) != 5:
            raise ValueError(f"'{value}' is not a 5-field cron expression (minute hour day month weekday)")
        if not croniter.is_valid(value):
            raise ValueError(f"'{value}' is not a valid cron expression; e.g. '*/15 * * * *' or '0 9 * * 1-5'")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"'{value}' is not an IANA time zone; write e.g. UTC, Europe/Paris, America/New_York"
            ) from None
        return value


class ChatTrigger(Strict):
    """A chat message (Telegram, WhatsApp) that starts a run, by command or by pattern; others go to the assistant."""

    name: _TriggerName = None
    command: str | None = Field(
        None, pattern=r"^/?[a-z0-9_]{1,32}$", description="e.g. /triage: a message starting with it runs the workflow"
    )
    pattern: str | None = Field(None, max_length=200, description="A regular expression a message must match")
    input: str | None = Field(
        None, description="The input that receives the message text (after the command); default: the only input"
    )

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"'{value}' is not a regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> ChatTrigger:
        if (self.command is None) == (self.pattern is None):
            raise ValueError("a chat trigger has exactly one of `command: /name` or `pattern: regex`")
        if self.command is not None and not self.command.startswith("/"):
            self.command = "/" + self.command
        return self


TRIGGER_KINDS = ("webhook", "schedule", "telegram", "whatsapp")


class Trigger(Strict):
    webhook: WebhookTrigger | None = None
    schedule: ScheduleTrigger | None = None
    telegram: ChatTrigger | None = None
    whatsapp: ChatTrigger | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        if sum(getattr(self, kind) is not None for kind in TRIGGER_KINDS) != 1:
            raise ValueError(
                "a trigger is exactly one of `webhook: {}`, `schedule: {cron: ...}`, "
                "`telegram: {command: /name}` or `whatsapp: {command: /name}`"
            )
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in TRIGGER_KINDS if getattr(self, kind) is not None)

    @property
    def config(self) -> WebhookTrigger | ScheduleTrigger | ChatTrigger:
        config: WebhookTrigger | ScheduleTrigger | ChatTrigger = getattr(self, self.kind)
        return config


def trigger_names(triggers: list[Trigger]) -> list[str]:
    """Each trigger's name: its own, else its kind for the first of a kind, then kind-2, kind-3..."""
    seen: dict[str, int] = {}
    names = []
    for trigger in triggers:
        kind = trigger.kind
        seen[kind] = seen.get(kind, 0) + 1
        names.append(trigger.config.name or (kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"))
    return names


_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
EGRESS_PATTERN = re.compile(rf"^(\*|(\*\.)?{_HOST_LABEL}(\.{_HOST_LABEL})*|\[[0-9a-f:.]+\])$")


class Permissions(Strict):
    """What the workflow may reach beyond the models; a person grants it before the workflow runs."""

    egress: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts that network tools (http_request, ...) may reach: api.example.com, *.slack.com (its subdomains), "
            "or * for any public host. Literal URLs in tool args are added automatically."
        ),
    )

    secrets: list[str] = Field(
        default_factory=list,
        description=(
            "Secrets an agent's tools may use by name (sql_query's `database`, send_email's `account`...); "
            "tool nodes' literal names and ${env:NAME} references are added automatically"
        ),
    )

    memory: list[Literal["global"]] = Field(
        default_factory=list,
        description="Shared memory scopes an agent's memory_search/memory_save may use (its own need nothing)",
    )

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"'{name}' is not a secret name; write letters, digits and _, e.g. ANALYTICS_DSN")
        return list(dict.fromkeys(value))

    @field_validator("egress")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        cleaned = []
        for pattern in value:
            host = pattern.strip().lower().rstrip(".")
            if not EGRESS_PATTERN.match(host):
                bare = host.split("://")[-1].split("/")[0].split(":")[0]
                hint = bare if bare != host and EGRESS_PATTERN.match(bare) else None
                fix = f"write just the host, e.g. {hint}" if hint else "write a host such as api.example.com"
                raise ValueError(f"'{pattern}' is not a host pattern; {fix}, *.example.com for its subdomains, or *")
            cleaned.append(host)
        return list(dict.fromkeys(cleaned))


class Metadata(Strict):
    name: str = Field(pattern=SLUG_PATTERN, description="Slug: lowercase letters, digits and dashes")
    description: str | None = None
    tags: list[str] = Field(default_factory=list)


class Spec(Strict):
    inputs: dict[str, InputSpec] = Field(default_factory=dict, description="Input name -> spec, or just its type")
    defaults: Defaults = Field(default_factory=lambda: Defaults())
    budget: Budget = Field(default_factory=lambda: Budget())
    nodes: dict[str, Node] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict, description="Output name -> template")
    triggers: list[Trigger] = Field(default_factory=list)
    permissions: Permissions = Field(default_factory=lambda: Permissions())
    memory: MemoryConfig | None = Field(None, description="The memory of every llm/agent node without its own")

    @field_validator("inputs", mode="before")
    @classmethod
    def _shorthand_inputs(cls, value: Any) -> Any:
        # `ticket: string` is shorthand for `ticket: {type: string}`.
        if isinstance(value, dict):
            return {key: {"type": spec} if isinstance(spec, str) else spec for key, spec in value.items()}
        return value


class Workflow(Strict):
    api_version: Literal["agentflow/v1"] = Field(alias="apiVersion")
    kind: Literal["Workflow"] = "Workflow"
    metadata: Metadata
    spec: Spec

    @property
    def name(self) -> str:
        return self.metadata.name
