"""The capability set of a workflow version: what it may reach beyond computing and calling models.

Derived from the workflow itself, never declared by whoever wrote it (except
egress, which templated URLs make unknowable: a workflow lists its hosts in
`spec.permissions.egress`, and literal URLs are added to it). A version runs
only within what a person granted (`agentflow.trust.grants`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow.spec.expressions import env_references, static_url_host
from agentflow.spec.models import AgentNode, CodeNode, MapNode, RemoteNode, ToolNode, Workflow

if TYPE_CHECKING:
    from agentflow.tools.registry import ToolRegistry

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
"""What a secret's name looks like (`ANALYTICS_DSN`): a literal one in a secret-naming argument is needed."""
URL_ARGUMENT = "url"
"""The argument of a network tool that holds its URL: a literal one tells the host statically."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    tools: frozenset[str] = frozenset()
    egress: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    """Where the world can start the workflow once deployed: webhook, telegram, whatsapp (schedules are not
    an opening: they run what the deployer chose, when they chose)."""
    code: bool = False
    """Runs code in the sandbox: a `code` node, or a tool that runs what a model wrote (python, shell)."""
    memory: frozenset[str] = frozenset()
    """Shared memory scopes it reads or writes (`global`); a workflow's own scopes need no grant."""
    remote_agents: frozenset[str] = frozenset()
    """Registered A2A agents its `remote` nodes call by name."""
    remote_skills: frozenset[str] = frozenset()
    """Skills its `remote` nodes call on whichever registered agent has them."""

    def __bool__(self) -> bool:
        return bool(
            self.tools
            or self.egress
            or self.secrets
            or self.channels
            or self.code
            or self.memory
            or self.remote_agents
            or self.remote_skills
        )

    def beyond(self, granted: Capabilities) -> Capabilities:
        """What this set needs that `granted` does not cover."""
        return Capabilities(
            tools=self.tools - granted.tools,
            egress=frozenset(host for host in self.egress if not any(covers(have, host) for have in granted.egress)),
            secrets=self.secrets - granted.secrets,
            channels=self.channels - granted.channels,
            code=self.code and not granted.code,
            memory=self.memory - granted.memory,
            remote_agents=self.remote_agents - granted.remote_agents,
            remote_skills=self.remote_skills - granted.remote_skills,
        )

    def __or__(self, other: Capabilities) -> Capabilities:
        return Capabilities(
            self.tools | other.tools,
            self.egress | other.egress,
            self.secrets | other.secrets,
            self.channels | other.channels,
            self.code or other.code,
            self.memory | other.memory,
            self.remote_agents | other.remote_agents,
            self.remote_skills | other.remote_skills,
        )

    def __sub__(self, other: Capabilities) -> Capabilities:
        return Capabilities(
            self.tools - other.tools,
            self.egress - other.egress,
            self.secrets - other.secrets,
            self.channels - other.channels,
            self.code and not other.code,
            self.memory - other.memory,
            self.remote_agents - other.remote_agents,
            self.remote_skills - other.remote_skills,
        )

    @property
    def mcp_servers(self) -> frozenset[str]:
        """The operator's MCP servers this set reaches (through its `mcp/<server>/<tool>` tools)."""
        return frozenset(name.split("/")[1] for name in self.tools if name.startswith("mcp/") and name.count("/") == 2)

    def lines(self) -> list[str]:
        """One line per capability, for a person deciding a grant."""
        return [
            *(["code execution in the sandbox"] if self.code else []),
            *(f"MCP server {name}" for name in sorted(self.mcp_servers)),
            *(f"tool {name}" for name in sorted(self.tools)),
            *(f"egress to {_host_text(host)}" for host in sorted(self.egress)),
            *(f"secret {name}" for name in sorted(self.secrets)),
            *(f"started by {_channel_text(name)}" for name in sorted(self.channels)),
            *(f"shared memory {name}" for name in sorted(self.memory)),
            *(f"remote agent {name}" for name in sorted(self.remote_agents)),
            *(f"remote skill {name}" for name in sorted(self.remote_skills)),
        ]

    def describe(self) -> str:
        return "; ".join(self.lines()) or "nothing"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tools": sorted(self.tools),
            "egress": sorted(self.egress),
            "secrets": sorted(self.secrets),
            "channels": sorted(self.channels),
            **({"code": True} if self.code else {}),  # stored grants from before code existed stay equal
            **({"memory": sorted(self.memory)} if self.memory else {}),
            **({"remote_agents": sorted(self.remote_agents)} if self.remote_agents else {}),
            **({"remote_skills": sorted(self.remote_skills)} if self.remote_skills else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Capabilities:
        data = data or {}
        return cls(
            tools=frozenset(data.get("tools", ())),
            egress=frozenset(data.get("egress", ())),
            secrets=frozenset(data.get("secrets", ())),
            channels=frozenset(data.get("channels", ())),
            code=bool(data.get("code", False)),
            memory=frozenset(data.get("memory", ())),
            remote_agents=frozenset(data.get("remote_agents", ())),
            remote_skills=frozenset(data.get("remote_skills", ())),
        )


def covers(granted: str, wanted: str) -> bool:
    """Whether a granted host pattern covers a wanted one (`*` covers all; `*.x.com` covers `a.x.com`)."""
    if granted == "*" or granted == wanted:
        return True
    if granted.startswith("*."):
        suffix = granted[1:]
        return wanted.endswith(suffix) and wanted != suffix[1:]
    return False


CHANNEL_TEXT = {"webhook": "signed webhooks", "telegram": "Telegram messages", "whatsapp": "WhatsApp messages"}


def _channel_text(channel: str) -> str:
    return CHANNEL_TEXT.get(channel, channel)


def _host_text(host: str) -> str:
    return "any public host" if host == "*" else host


def inner_nodes(workflow: Workflow) -> Iterator[Any]:
    """Every node, with a map's inner node in its place."""
    for node in workflow.spec.nodes.values():
        yield node.node if isinstance(node, MapNode) else node


def tools_used(workflow: Workflow) -> Iterator[tuple[str, ToolNode | AgentNode]]:
    """(tool name, the node using it) for every tool a workflow can call, inside maps and agents too."""
    for inner in inner_nodes(workflow):
        if isinstance(inner, ToolNode):
            yield inner.tool, inner
        elif isinstance(inner, AgentNode):
            for name in inner.tools:
                yield name, inner


def literal_host(node: ToolNode) -> str | None:
    """The host of a tool node's URL argument when it is written literally (None when templated or absent)."""
    return static_url_host(node.args.get(URL_ARGUMENT))


def derive(workflow: Workflow, tools: ToolRegistry | None = None) -> Capabilities:
    """The capabilities a workflow version needs: tools that are not pure, egress hosts, secret names, code,
    shared memory, and the remote agents and skills it calls."""
    pure = set(tools.pure_names()) if tools is not None else set()
    network = set(tools.network_names()) if tools is not None else {"http_request"}
    used: set[str] = set()
    egress = set(workflow.spec.permissions.egress)
    secrets: list[str] = list(workflow.spec.permissions.secrets)
    code = any(isinstance(inner, CodeNode) for inner in inner_nodes(workflow))
    for name, node in tools_used(workflow):
        if name in pure:
            continue
        used.add(name)
        tool = tools.get(name) if tools is not None and name in tools else None
        if tool is not None:
            code = code or tool.code
            egress.update(tool.hosts)
        if isinstance(node, ToolNode):
            secrets += env_references(node.args)
            for argument in tool.secret_arguments if tool is not None else ():
                named = node.args.get(argument)
                if isinstance(named, str) and SECRET_NAME.match(named):
                    secrets.append(named)
            host = literal_host(node) if name in network else None
            if host:
                egress.add(f"[{host}]" if ":" in host else host)
    channels: set[str] = set()
    for trigger in workflow.spec.triggers:
        if trigger.webhook is not None and trigger.webhook.secret:
            secrets += env_references(trigger.webhook.secret)
        if trigger.kind in CHANNEL_TEXT:
            channels.add(trigger.kind)
    remote = [inner for inner in inner_nodes(workflow) if isinstance(inner, RemoteNode)]
    return Capabilities(
        frozenset(used),
        frozenset(egress),
        frozenset(secrets),
        frozenset(channels),
        code,
        shared_memory(workflow),
        remote_agents=frozenset(node.agent for node in remote if node.agent is not None),
        remote_skills=frozenset(node.skill for node in remote if node.skill is not None),
    )


def shared_memory(workflow: Workflow) -> frozenset[str]:
    """The shared scopes its `memory:` settings name, and those its agents' memory tools may use."""
    from agentflow.spec.memory import SHARED_SCOPES

    kinds: set[str] = set(workflow.spec.permissions.memory)
    configs = [workflow.spec.memory, *(getattr(inner, "memory", None) for inner in inner_nodes(workflow))]
    for config in configs:
        if config is not None:
            kinds |= config.scope_kinds()
    return frozenset(kinds & SHARED_SCOPES)


def summary(capabilities: Capabilities) -> dict[str, Any]:
    """JSON for the API and the CLI: the lists and one readable line."""
    return {**capabilities.to_dict(), "text": capabilities.describe()}
