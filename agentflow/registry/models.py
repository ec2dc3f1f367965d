"""What the registry hands out: agents with their skills and their state now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentflow.registry.health import state_at
from agentflow.store.base import AgentRecord, EnrolmentToken

REGISTERED, BY_URL = "registered", "url"


@dataclass(frozen=True, slots=True)
class Skill:
    id: str
    name: str
    description: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    url: str  # the A2A endpoint from the card
    card_url: str
    description: str
    version: str | None
    skills: tuple[Skill, ...]
    source: str  # registered | url
    state: str  # healthy | stale | offline
    last_seen: float | None
    latency_ms: float | None
    created_at: float

    def has_skill(self, skill: str) -> bool:
        """Whether a skill's id, name or one of its tags is `skill`."""
        return any(skill in (item.id, item.name, *item.tags) for item in self.skills)


def agent_of(record: AgentRecord, *, now: float, ttl_s: float) -> Agent:
    return Agent(
        id=record.id,
        name=record.name,
        url=record.url,
        card_url=record.card_url,
        description=record.description,
        version=record.card_version,
        skills=tuple(
            Skill(
                id=str(skill.get("id", "")),
                name=str(skill.get("name", "")),
                description=str(skill.get("description", "")),
                tags=tuple(str(tag) for tag in skill.get("tags", [])),
            )
            for skill in record.skills
        ),
        source=record.source,
        state=state_at(record.last_seen or record.created_at, now, ttl_s),
        last_seen=record.last_seen,
        latency_ms=record.latency_ms,
        created_at=record.created_at,
    )


def agent_json(agent: Agent) -> dict[str, Any]:
    """As the API and `--json` show it (no secret, ever)."""
    return {
        "id": agent.id,
        "name": agent.name,
        "url": agent.url,
        "card_url": agent.card_url,
        "description": agent.description,
        "version": agent.version,
        "skills": [
            {"id": skill.id, "name": skill.name, "description": skill.description, "tags": list(skill.tags)}
            for skill in agent.skills
        ],
        "source": agent.source,
        "state": agent.state,
        "last_seen": agent.last_seen,
        "latency_ms": agent.latency_ms,
        "created_at": agent.created_at,
    }


def token_json(token: EnrolmentToken) -> dict[str, Any]:
    """A token without its value, which is shown once, when issued."""
    return {
        "id": token.id,
        "note": token.note,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "used_at": token.used_at,
        "used_by": token.used_by,
        "revoked_at": token.revoked_at,
    }
