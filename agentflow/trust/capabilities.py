"""The capability set of a workflow version: what it may reach beyond computing and calling models.

Derived from the workflow itself, never declared by whoever wrote it (except
egress, which templated URLs make unknowable: a workflow lists its hosts in
`spec.permissions.egress`, and literal URLs are added to it). A version runs
only within what a person granted (`agentflow.trust.grants`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow.spec.expressions import env_references, static_url_host
from agentflow.spec.models import AgentNode, MapNode, ToolNode, Workflow

if TYPE_CHECKING:
    from agentflow.tools.registry import ToolRegistry

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

    def __bool__(self) -> bool:
        return bool(self.tools or self.egress or self.secrets or self.channels)

    def beyond(self, granted: Capabilities) -> Capabilities:
        """What this set needs that `granted` does not cover."""
        return Capabilities(
            tools=self.tools - granted.tools,
            egress=frozenset(host for host in self.egress if not any(covers(have, host) for have in granted.egress)),
            secrets=self.secrets - granted.secrets,
            channels=self.channels - granted.channels,
        )

    def __or__(self, other: Capabilities) -> Capabilities:
        return Capabilities(
            self.tools | other.tools,
            self.egress | other.egress,
            self.secrets | other.secrets,
            self.channels | other.channels,
        )

    def __sub__(self, other: Capabilities) -> Capabilities:
        return Capabilities(
            self.tools - other.tools,
            self.egress - other.egress,
            self.secrets - other.secrets,
            self.channels - other.channels,
        )

    def lines(self) -> list[str]:
        """One line per capability, for a person deciding a grant."""
        return [
            *(f"tool {name}" for name in sorted(self.tools)),
            *(f"egress to {_host_text(host)}" for host in sorted(self.egress)),
            *(f"secret {name}" for name in sorted(self.secrets)),
            *(f"started by {_channel_text(name)}" for name in sorted(self.channels)),
        ]

    def describe(self) -> str:
        return "; ".join(self.lines()) or "nothing"

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "tools": sorted(self.tools),
            "egress": sorted(self.egress),
            "secrets": sorted(self.secrets),
            "channels": sorted(self.channels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[str]] | None) -> Capabilities:
        data = data or {}
        return cls(
            tools=frozenset(data.get("tools", ())),
            egress=frozenset(data.get("egress", ())),
            secrets=frozenset(data.get("secrets", ())),
            channels=frozenset(data.get("channels", ())),
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


def tools_used(workflow: Workflow) -> Iterator[tuple[str, ToolNode | AgentNode]]:
    """(tool name, the node using it) for every tool a workflow can call, inside maps and agents too."""
    for node in workflow.spec.nodes.values():
        inner = node.node if isinstance(node, MapNode) else node
        if isinstance(inner, ToolNode):
            yield inner.tool, inner
        elif isinstance(inner, AgentNode):
            for name in inner.tools:
                yield name, inner


def literal_host(node: ToolNode) -> str | None:
    """The host of a tool node's URL argument when it is written literally (None when templated or absent)."""
    return static_url_host(node.args.get(URL_ARGUMENT))


def derive(workflow: Workflow, tools: ToolRegistry | None = None) -> Capabilities:
    """The capabilities a workflow version needs: tools that are not pure, egress hosts and secret names."""
    pure = set(tools.pure_names()) if tools is not None else set()
    network = set(tools.network_names()) if tools is not None else {"http_request"}
    used: set[str] = set()
    egress = set(workflow.spec.permissions.egress)
    secrets: list[str] = []
    for name, node in tools_used(workflow):
        if name in pure:
            continue
        used.add(name)
        if isinstance(node, ToolNode):
            secrets += env_references(node.args)
            host = literal_host(node) if name in network else None
            if host:
                egress.add(f"[{host}]" if ":" in host else host)
    channels: set[str] = set()
    for trigger in workflow.spec.triggers:
        if trigger.webhook is not None and trigger.webhook.secret:
            secrets += env_references(trigger.webhook.secret)
        if trigger.kind in CHANNEL_TEXT:
            channels.add(trigger.kind)
    return Capabilities(frozenset(used), frozenset(egress), frozenset(secrets), frozenset(channels))


def summary(capabilities: Capabilities) -> dict[str, Any]:
    """JSON for the API and the CLI: the lists and one readable line."""
    return {**capabilities.to_dict(), "text": capabilities.describe()}
