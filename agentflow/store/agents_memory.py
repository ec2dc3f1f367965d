"""The agent registry's rows in plain Python (the `AgentStore` role of base.py), mixed into InMemoryStore."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import replace

from agentflow.store.base import AgentRecord, CardChange, EnrolmentToken


class AgentMemory:
    """Values go through JSON as the databases keep them, so a caller never holds the store's own objects."""

    def __init__(self) -> None:
        self._agents_lock = threading.Lock()
        self._agents: dict[str, AgentRecord] = {}
        self._cards: list[CardChange] = []
        self._tokens: dict[str, EnrolmentToken] = {}

    def save_agent(self, agent: AgentRecord) -> None:
        with self._agents_lock:
            self._agents[agent.id] = _copy(agent)

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        with self._agents_lock:
            found = self._agents.get(agent_id)
            return None if found is None else _copy(found)

    def list_agents(self) -> list[AgentRecord]:
        with self._agents_lock:
            return [_copy(agent) for agent in sorted(self._agents.values(), key=lambda a: (a.created_at, a.id))]

    def touch_agent(self, agent_id: str, *, seen_at: float | None, latency_ms: float | None) -> bool:
        with self._agents_lock:
            found = self._agents.get(agent_id)
            if found is None:
                return False
            self._agents[agent_id] = replace(
                found,
                last_seen=found.last_seen if seen_at is None else seen_at,
                latency_ms=found.latency_ms if latency_ms is None else latency_ms,
            )
            return True

    def touch_agents(self, seen: Mapping[str, float]) -> list[str]:
        missing = []
        with self._agents_lock:
            for agent_id, at in seen.items():
                found = self._agents.get(agent_id)
                if found is None:
                    missing.append(agent_id)
                elif found.last_seen is None or found.last_seen < at:
                    self._agents[agent_id] = replace(found, last_seen=at)
        return missing

    def delete_agent(self, agent_id: str) -> bool:
        with self._agents_lock:
            self._cards = [change for change in self._cards if change.agent_id != agent_id]
            return self._agents.pop(agent_id, None) is not None

    def delete_agents_unseen_since(self, cutoff: float) -> list[str]:
        with self._agents_lock:
            gone = sorted(agent.id for agent in self._agents.values() if (agent.last_seen or agent.created_at) < cutoff)
            for agent_id in gone:
                del self._agents[agent_id]
            self._cards = [change for change in self._cards if change.agent_id not in gone]
            return gone

    def record_card_change(self, change: CardChange) -> None:
        with self._agents_lock:
            self._cards.append(replace(change, skills=list(change.skills)))

    def card_history(self, agent_id: str) -> list[CardChange]:
        with self._agents_lock:
            return [
                replace(change, skills=list(change.skills)) for change in self._cards if change.agent_id == agent_id
            ]

    def add_enrolment_token(self, token: EnrolmentToken) -> None:
        with self._agents_lock:
            if any(known.token_hash == token.token_hash for known in self._tokens.values()) or token.id in self._tokens:
                raise ValueError(f"enrolment token {token.id} exists already")
            self._tokens[token.id] = token

    def enrolment_token(self, token_hash: str) -> EnrolmentToken | None:
        with self._agents_lock:
            return next((token for token in self._tokens.values() if token.token_hash == token_hash), None)

    def enrolment_tokens(self) -> list[EnrolmentToken]:
        with self._agents_lock:
            return sorted(self._tokens.values(), key=lambda token: (-token.created_at, token.id))

    def use_enrolment_token(self, token_hash: str, *, agent_id: str, now: float) -> bool:
        with self._agents_lock:
            token = next((token for token in self._tokens.values() if token.token_hash == token_hash), None)
            if token is None or token.used_at is not None or token.revoked_at is not None or token.expires_at <= now:
                return False
            self._tokens[token.id] = replace(token, used_at=now, used_by=agent_id)
            return True

    def revoke_enrolment_token(self, token_id: str, *, now: float) -> bool:
        with self._agents_lock:
            token = self._tokens.get(token_id)
            if token is None or token.used_at is not None or token.revoked_at is not None:
                return False
            self._tokens[token_id] = replace(token, revoked_at=now)
            return True


def _copy(agent: AgentRecord) -> AgentRecord:
    return replace(agent, card=json.loads(json.dumps(agent.card)), skills=json.loads(json.dumps(agent.skills)))
