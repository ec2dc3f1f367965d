"""The registry: enrolment with one-time tokens, heartbeats, add-by-URL with card polling, and lookups.

Agents come two ways. One an operator added by URL is polled (its card, with If-None-Match) every TTL/3;
one that enrolled itself with a token heartbeats every TTL/3 with its per-agent secret. Either way contact
moves `last_seen`, and the state follows from it (health.py). Tokens and secrets are kept as SHA-256 only.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from agentflow.registry.cards import CardError, card_endpoint, card_skills, fetch_card
from agentflow.registry.health import HEALTHY, STATES, heartbeat_interval
from agentflow.registry.models import BY_URL, REGISTERED, Agent, agent_of
from agentflow.settings import Settings
from agentflow.store.base import AgentRecord, AgentStore, CardChange, EnrolmentToken
from agentflow.trust.egress import EgressDenied, EgressPolicy

log = logging.getLogger("agentflow.registry")

CARD_TIMEOUT_S = 10.0
BEATS_WRITTEN_EVERY_S = 1.0
"""Heartbeats are kept in memory and written together this often: one transaction, not one per agent."""
SECRET_RECHECKED_EVERY_S = 300.0
"""A secret this process checked is trusted that long before it is read from the store again."""
DEFAULT_TOKEN_TTL_S = 24 * 3600.0
_NO_SECRET = hashlib.sha256(b"no agent has this secret").hexdigest()  # compared against for unknown ids


class RegistryError(Exception):
    """A registry request refused; `status` is the HTTP status the API answers with."""

    status = 400


class EnrolmentRefused(RegistryError):
    status = 401


class NotThisAgent(RegistryError):
    """Unknown agent id or wrong secret: one message for both, so neither can be probed."""

    status = 403

    def __init__(self) -> None:
        super().__init__("unknown agent or wrong secret; enrol again with a new token from the operator")


class UnknownAgent(RegistryError):
    status = 404


@dataclass(frozen=True, slots=True)
class _Known:
    secret_digest: str
    card_version: str | None
    checked_at: float


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Registry:
    def __init__(
        self,
        store: AgentStore,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        policy: EgressPolicy | None = None,
    ) -> None:
        self.store = store
        self.ttl_s = settings.agent_ttl_s
        self.retention_s = settings.agent_retention_s
        self.clock = clock
        self.policy = policy or EgressPolicy(hosts=None, allow_internal=settings.egress_allow_internal)
        self._polled: dict[str, float] = {}  # agent id -> when this process last polled its card
        self._known: dict[str, _Known] = {}  # agent id -> its secret's digest and card version, checked here
        self._beats: dict[str, float] = {}  # agent id -> its newest heartbeat not yet written
        self._writing: asyncio.Task[None] | None = None
        self._writing_beats = threading.Lock()

    @property
    def heartbeat_s(self) -> float:
        return heartbeat_interval(self.ttl_s)

    # -- lookups (the contract the remote node uses) --------------------------------------

    def list(self) -> list[Agent]:
        now = self.clock()
        return [agent_of(self._heard(record), now=now, ttl_s=self.ttl_s) for record in self.store.list_agents()]

    def get(self, agent_id: str) -> Agent | None:
        record = self.store.get_agent(agent_id)
        return None if record is None else agent_of(self._heard(record), now=self.clock(), ttl_s=self.ttl_s)

    def _heard(self, record: AgentRecord) -> AgentRecord:
        """The record with this process's heartbeats not yet written: what this process reads is current."""
        beat = self._beats.get(record.id)
        if beat is None or (record.last_seen is not None and record.last_seen >= beat):
            return record
        return replace(record, last_seen=beat)

    def candidates(self, *, agent: str | None = None, skill: str | None = None) -> builtins.list[Agent]:
        """Agents named `agent` or with `skill` (id, name or tag): healthy, then stale, then offline; fastest first."""
        found = [
            item
            for item in self.list()
            if (agent is None or item.name == agent) and (skill is None or item.has_skill(skill))
        ]
        return sorted(
            found,
            key=lambda item: (
                STATES.index(item.state),
                item.latency_ms is None,
                item.latency_ms or 0.0,
                item.name,
                item.id,
            ),
        )

    def record_call(self, agent_id: str, latency_ms: float, ok: bool) -> None:
        """A call that got an answer is contact: it keeps the agent healthy and measures it; a failure ages it."""
        if ok:
            self.store.touch_agent(agent_id, seen_at=self.clock(), latency_ms=latency_ms)

    # -- enrolment tokens (operator) -------------------------------------------------------

    def issue_token(self, *, note: str | None = None, ttl_s: float = DEFAULT_TOKEN_TTL_S) -> tuple[EnrolmentToken, str]:
        """A new one-time token and its value, which is shown this once and kept only as a hash."""
        if ttl_s <= 0:
            raise RegistryError(f"a token's ttl_s must be positive seconds (got {ttl_s:g})")
        value = "aft_" + secrets.token_urlsafe(32)
        now = self.clock()
        token = EnrolmentToken(
            id="tok_" + secrets.token_hex(6),
            token_hash=digest(value),
            created_at=now,
            expires_at=now + ttl_s,
            note=note or None,
        )
        self.store.add_enrolment_token(token)
        return token, value

    def tokens(self) -> builtins.list[EnrolmentToken]:
        return self.store.enrolment_tokens()

    def revoke_token(self, token_id: str) -> None:
        if not self.store.revoke_enrolment_token(token_id, now=self.clock()):
            known = {token.id: token for token in self.store.enrolment_tokens()}
            if token_id not in known:
                raise UnknownAgent(f"no enrolment token {token_id}; list them with agentflow agents token --list")
            raise RegistryError(f"enrolment token {token_id} was already used or revoked")

    # -- agent-initiated -------------------------------------------------------------------

    def _check_token(self, token: str | None) -> str:
        if not token:
            raise EnrolmentRefused(
                "no enrolment token: ask the operator for one (agentflow agents token) and send it as 'token'"
            )
        found = self.store.enrolment_token(digest(token))
        if found is None:
            raise EnrolmentRefused("unknown enrolment token; ask the operator for a new one (agentflow agents token)")
        if found.revoked_at is not None:
            raise EnrolmentRefused("this enrolment token was revoked; ask the operator for a new one")
        if found.used_at is not None:
            raise EnrolmentRefused("this enrolment token was already used (tokens are one-time); ask for a new one")
        if found.expires_at <= self.clock():
            raise EnrolmentRefused("this enrolment token has expired; ask the operator for a new one")
        return found.token_hash

    async def enrol(self, token: str | None, card_url: str) -> tuple[Agent, str]:
        """Fetch the card, spend the token, store the agent; returns it with its secret (shown this once)."""
        token_hash = await asyncio.to_thread(self._check_token, token)
        if not card_url:
            raise RegistryError("no card_url: send the URL of the agent's card (or its base URL) with the token")
        record = await self._new_record(card_url, source=REGISTERED)
        secret = "afs_" + secrets.token_urlsafe(32)
        record = replace(record, secret_hash=digest(secret))
        await asyncio.to_thread(self._store_enrolled, token, token_hash, record)
        log.info("agent %s (%s) enrolled from %s", record.name, record.id, record.card_url)
        return agent_of(record, now=self.clock(), ttl_s=self.ttl_s), secret

    def _store_enrolled(self, token: str | None, token_hash: str, record: AgentRecord) -> None:
        if not self.store.use_enrolment_token(token_hash, agent_id=record.id, now=self.clock()):
            self._check_token(token)  # says why: another enrolment spent it meanwhile, or it just expired
            raise EnrolmentRefused("this enrolment token cannot be used; ask the operator for a new one")
        # An agent that enrols again (a restart) replaces its earlier registration of the same card.
        for earlier in self.store.list_agents():
            if earlier.source == REGISTERED and earlier.card_url == record.card_url:
                self.store.delete_agent(earlier.id)
        self.store.save_agent(record)
        self._record_change(record, None)

    def _authenticate(self, agent_id: str, secret: str | None) -> AgentRecord:
        record = self.store.get_agent(agent_id)
        expected = record.secret_hash if record is not None and record.secret_hash else _NO_SECRET
        ok = hmac.compare_digest(digest(secret or ""), expected)
        if record is None or not record.secret_hash or not ok:
            raise NotThisAgent()
        return record

    async def heartbeat(self, agent_id: str, secret: str | None, *, card_version: str | None = None) -> str:
        """The agent is alive: its state after this heartbeat. A `card_version` other than the stored one
        re-fetches its card. The common case — a secret this process checked lately, the same card — touches
        no database: the heartbeat is written with the others within BEATS_WRITTEN_EVERY_S."""
        if self.beat_known(agent_id, secret, card_version=card_version):
            return HEALTHY
        now = self.clock()
        record = await asyncio.to_thread(self._authenticate, agent_id, secret)
        if card_version is not None and card_version != record.card_version:
            try:
                await self._refresh(record)
            except CardError as exc:
                log.warning("agent %s announced card version %s, but %s", record.id, card_version, exc)
            refreshed = await asyncio.to_thread(self.store.get_agent, agent_id)
            record = refreshed or record
        self._known[agent_id] = _Known(record.secret_hash or "", record.card_version, now)
        self._beat(agent_id, now)
        return HEALTHY

    def beat_known(self, agent_id: str, secret: str | None, *, card_version: str | None = None) -> bool:
        """The heartbeat of an agent whose secret this process checked lately, announcing no new card: taken
        without touching the database (True). False: it needs `heartbeat`'s full check. Call it on the loop."""
        known = self._known.get(agent_id)
        now = self.clock()
        if (
            known is None
            or now - known.checked_at >= SECRET_RECHECKED_EVERY_S
            or card_version not in (None, known.card_version)
            or not hmac.compare_digest(digest(secret or ""), known.secret_digest)
        ):
            return False
        self._beat(agent_id, now)
        return True

    def _beat(self, agent_id: str, at: float) -> None:
        self._beats[agent_id] = max(at, self._beats.get(agent_id, at))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(self._write_beats_soon())

    async def _write_beats_soon(self) -> None:
        await asyncio.sleep(BEATS_WRITTEN_EVERY_S)  # gathers the heartbeats of the next second into one write
        await self.write_beats()

    async def write_beats(self) -> None:
        """Write the heartbeats heard since the last write (the monitor calls it when the server stops); a
        write under way elsewhere is waited for, so what was heard before this call is written when it returns."""
        await asyncio.to_thread(self._write_beats)

    def _write_beats(self) -> None:
        with self._writing_beats:
            beats, self._beats = self._beats, {}
            if not beats:
                return
            try:
                gone = self.store.touch_agents(beats)
            except Exception:
                for agent_id, at in beats.items():  # kept for the next write
                    self._beats[agent_id] = max(at, self._beats.get(agent_id, at))
                raise
            for agent_id in gone:  # removed meanwhile (by another process): its next heartbeat is refused
                self._known.pop(agent_id, None)

    def deregister(self, agent_id: str, secret: str | None) -> None:
        """A graceful shutdown: the agent leaves the registry."""
        self._authenticate(agent_id, secret)
        self.store.delete_agent(agent_id)
        self._forget(agent_id)
        log.info("agent %s deregistered", agent_id)

    # -- orchestrator-initiated ------------------------------------------------------------

    async def add_url(self, url: str) -> Agent:
        """Add an agent by its card (or base) URL; it is then polled every TTL/3."""
        for known in await asyncio.to_thread(self.store.list_agents):
            if known.source == BY_URL and url in (known.card_url, known.url):
                raise RegistryError(f"the agent at {url} is already registered as {known.id} ({known.name})")
        record = await self._new_record(url, source=BY_URL)
        await asyncio.to_thread(self.store.save_agent, record)
        await asyncio.to_thread(self._record_change, record, None)
        self._polled[record.id] = self.clock()
        return agent_of(record, now=self.clock(), ttl_s=self.ttl_s)

    def remove(self, agent_id: str) -> None:
        if not self.store.delete_agent(agent_id):
            raise UnknownAgent(f"no agent {agent_id}; list them with agentflow agents list or GET /api/agents")
        self._forget(agent_id)

    def _forget(self, agent_id: str) -> None:
        self._polled.pop(agent_id, None)
        self._known.pop(agent_id, None)
        self._beats.pop(agent_id, None)

    async def poll_due(self) -> None:
        """Poll the cards of URL-added agents not polled for TTL/3 (a 200 or a 304 is contact)."""
        now = self.clock()
        for record in await asyncio.to_thread(self.store.list_agents):
            if record.source == BY_URL and now - self._polled.get(record.id, 0.0) >= self.heartbeat_s:
                await self.poll(record)

    async def poll(self, record: AgentRecord) -> bool:
        self._polled[record.id] = self.clock()
        try:
            await self._refresh(record)
        except CardError as exc:
            log.info("agent %s (%s) did not answer its card poll: %s", record.name, record.id, exc)
            return False
        return True

    async def sweep(self) -> builtins.list[str]:
        """Remove agents silent for the retention period; their ids."""
        await self.write_beats()  # what this process heard counts
        gone = await asyncio.to_thread(self.store.delete_agents_unseen_since, self.clock() - self.retention_s)
        for agent_id in gone:
            self._forget(agent_id)
            log.info("agent %s removed: silent for the retention period", agent_id)
        return gone

    # -- cards -----------------------------------------------------------------------------

    async def _new_record(self, url: str, *, source: str) -> AgentRecord:
        fetched, latency_ms = await self._fetch(url, etag=None)
        card = fetched.card or {}
        endpoint = card_endpoint(card, fetched.url)
        await self._check_endpoint(endpoint)
        now = self.clock()
        return AgentRecord(
            id="agt_" + secrets.token_hex(8),
            name=str(card["name"]).strip(),
            url=endpoint,
            card_url=fetched.url,
            card=card,
            source=source,
            created_at=now,
            description=str(card.get("description") or ""),
            card_version=_version(card),
            card_etag=fetched.etag,
            skills=card_skills(card),
            last_seen=now,
            latency_ms=latency_ms,
        )

    async def _fetch(self, url: str, *, etag: str | None) -> tuple[Any, float]:
        started = time.perf_counter()
        fetched = await fetch_card(url, policy=self.policy, etag=etag, timeout=CARD_TIMEOUT_S)
        return fetched, (time.perf_counter() - started) * 1000

    async def _check_endpoint(self, endpoint: str) -> None:
        """The card's endpoint is where calls will go: it must pass the same egress guard as the card."""
        target = httpx.URL(endpoint)
        if target.scheme not in ("http", "https"):
            raise CardError(f"the agent's endpoint {endpoint} must be an http:// or https:// URL")
        try:
            await self.policy.resolve(target.host, target.port or (443 if target.scheme == "https" else 80))
        except EgressDenied as exc:
            raise CardError(
                f"the agent's endpoint {endpoint} is not reachable from here: {exc}", refused=True
            ) from None

    async def _refresh(self, record: AgentRecord) -> None:
        """Fetch the card again (If-None-Match); contact either way, a changed card stored and recorded."""
        fetched, latency_ms = await self._fetch(record.card_url, etag=record.card_etag)
        now = self.clock()
        if fetched.not_modified or fetched.card == record.card:
            await asyncio.to_thread(self.store.touch_agent, record.id, seen_at=now, latency_ms=latency_ms)
            return
        card = fetched.card or {}
        updated = replace(
            record,
            name=str(card["name"]).strip(),
            url=card_endpoint(card, record.card_url),
            card=card,
            description=str(card.get("description") or ""),
            card_version=_version(card),
            card_etag=fetched.etag,
            skills=card_skills(card),
            last_seen=now,
            latency_ms=latency_ms,
        )
        await self._check_endpoint(updated.url)
        await asyncio.to_thread(self.store.save_agent, updated)
        await asyncio.to_thread(self._record_change, updated, record)

    def _record_change(self, now: AgentRecord, before: AgentRecord | None) -> None:
        skills = [skill["id"] for skill in now.skills]
        if before is None:
            change = f"first card: version {now.card_version or '-'}, {len(skills)} skill(s)"
        else:
            old = [skill["id"] for skill in before.skills]
            parts = []
            if before.card_version != now.card_version:
                parts.append(f"version {before.card_version or '-'} -> {now.card_version or '-'}")
            if added := [skill for skill in skills if skill not in old]:
                parts.append("skills added: " + ", ".join(added))
            if dropped := [skill for skill in old if skill not in skills]:
                parts.append("skills removed: " + ", ".join(dropped))
            if before.url != now.url:
                parts.append(f"endpoint {before.url} -> {now.url}")
            change = "; ".join(parts) or "card details changed"
        self.store.record_card_change(
            CardChange(agent_id=now.id, at=self.clock(), version=now.card_version, skills=skills, change=change)
        )


def _version(card: dict[str, Any]) -> str | None:
    version = card.get("version")
    return None if version is None else str(version)
