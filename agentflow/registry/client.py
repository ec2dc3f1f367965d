"""The agent process's side of enrolment: enrol with a one-time token, heartbeat, deregister on the way out.

    async with Enrolment("http://orchestrator:7860", token=TOKEN, card_url="http://me:9000/") as enrolment:
        ...  # serve; enrolment.agent_id is this agent's id in the registry

The orchestrator's URL is the agent operator's configuration (often on a private network), not something a
workflow chose, so it is reached directly rather than through a workflow's egress guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any

import httpx

log = logging.getLogger("agentflow.registry")


class EnrolmentError(Exception):
    """The orchestrator refused or could not be reached; the message is its answer."""


class Enrolment:
    def __init__(
        self,
        orchestrator_url: str,
        *,
        token: str,
        card_url: str,
        card_version: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base = orchestrator_url.rstrip("/") + "/api/registry"
        self.token = token
        self.card_url = card_url
        self.card_version = card_version
        self.agent_id: str | None = None
        self.heartbeat_s = 0.0
        self.ttl_s = 0.0
        self.state: str | None = None  # as the last heartbeat's answer said
        self.heartbeats = 0  # answered heartbeats
        self._secret: str | None = None
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Enrolment:
        try:
            answer = await self._send("POST", "/enrol", json={"token": self.token, "card_url": self.card_url})
        except BaseException:
            await self._client.aclose()
            raise
        self.agent_id, self._secret = answer["agent_id"], answer["secret"]
        self.heartbeat_s, self.ttl_s = float(answer["heartbeat_s"]), float(answer["ttl_s"])
        self.state = "healthy"
        self._task = asyncio.create_task(self._beat(), name=f"agentflow-heartbeat:{self.agent_id}")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            if self.agent_id is not None:
                await self._send("DELETE", f"/{self.agent_id}")
        except EnrolmentError as exc:  # leaving is best effort: the registry expires a silent agent anyway
            log.warning("could not deregister agent %s: %s", self.agent_id, exc)
        finally:
            self.agent_id = None
            await self._client.aclose()

    async def heartbeat(self) -> str:
        """Say the agent is alive now; returns its state."""
        body = {"card_version": self.card_version} if self.card_version is not None else {}
        answer = await self._send("POST", f"/{self.agent_id}/heartbeat", json=body)
        self.heartbeats += 1
        self.state = str(answer["state"])
        return self.state

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)  # the cadence the orchestrator asked for
            try:
                await self.heartbeat()
            except EnrolmentError as exc:
                log.warning("heartbeat of agent %s failed: %s", self.agent_id, exc)

    async def _send(self, method: str, path: str, *, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
        try:
            response = await self._client.request(method, self.base + path, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise EnrolmentError(f"cannot reach the orchestrator at {self.base}: {type(exc).__name__} {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise EnrolmentError(f"the orchestrator refused ({response.status_code}): {detail}")
        return response.json() if response.content else None
