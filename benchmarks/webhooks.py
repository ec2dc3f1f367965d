"""Signed webhook deliveries accepted durably per second, beside a bare FastAPI endpoint.

Three uvicorn processes with the same settings, one load generator (raw HTTP/1.1 over keep-alive
connections, deliveries signed beforehand, so the client costs little) taking them in turn:

- the real app on its embedded defaults (SQLite in a temporary home, tracing off): its webhook
  verifies each Standard Webhooks signature, maps the body, checks the inputs and commits the run
  under its delivery id before answering 202 — and, one process being everything, executes those
  runs meanwhile;
- the same app scaled out (Postgres, AGENTFLOW_EXECUTOR=workers): it accepts and queues each run in
  the same transaction, and the workers (none started here) would execute them;
- a bare FastAPI app whose endpoint only answers 202: the floor of Python HTTP on this machine.

Reported: deliveries/s (median of rounds), cost per delivery against the bare endpoint, p50/p99.

    python -m benchmarks.webhooks
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks._common import ROOT, Report, main_for, median

DELIVERIES = 2000
CONNECTIONS = 32
ROUNDS = 3
WORKFLOW = """\
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: hook}
spec:
  inputs: {ticket: string, priority: {type: integer, default: 3}}
  nodes:
    echo: {type: transform, expr: "{ticket: inputs.ticket, priority: inputs.priority}"}
  outputs: {ticket: "{{ echo.ticket }}"}
  triggers:
    - webhook: {inputs: {ticket: issue.title, priority: issue.priority}, rate: 1000000}
"""
BARE_APP = """
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/api/hooks/hook/webhook")
async def hook() -> JSONResponse:
    return JSONResponse({"status": "accepted"}, status_code=202)
"""
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def _start(command: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        found = _LISTENING.search(line)
        if found:
            # Keep draining its log so the pipe never fills and blocks it.
            import threading

            threading.Thread(target=lambda: [None for _ in process.stderr or ()], daemon=True).start()
            return process, int(found.group(1))
    raise RuntimeError(f"{command} did not start")


def _uvicorn(target: str, *, factory: bool = False) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", "0"]
    command += ["--log-level", "info", "--no-access-log", "--timeout-keep-alive", "120"]
    return command + (["--factory"] if factory else [])


def _request(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = ["POST /api/hooks/hook/webhook HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _signed(secret: str, count: int, port: int, prefix: str) -> list[bytes]:
    from standardwebhooks import Webhook

    signer = Webhook(secret)
    now = datetime.now(tz=UTC)
    requests = []
    for n in range(count):
        body = json.dumps({"issue": {"title": f"ticket {n}", "priority": n % 5}})
        delivery = f"{prefix}-{n}"
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(delivery, now, body),
        }
        requests.append(_request(port, body.encode(), headers))
    return requests


async def _load(port: int, requests: list[bytes]) -> tuple[float, list[float], dict[int, int]]:
    """Send every request over CONNECTIONS keep-alive connections; (seconds, latencies in ms, status counts)."""
    queue = list(reversed(requests))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                request = queue.pop()
                began = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - began) * 1000)
                status = int(head.split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return time.perf_counter() - began, latencies, statuses


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _setup(home: Path, port: int) -> str:
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        assert client.post("/api/workflows", json={"source": WORKFLOW}).status_code == 201
        deployed = client.post("/api/workflows/hook/deploy", json={})
        assert deployed.status_code == 201, deployed.text
        secret: str = deployed.json()["secrets"]["webhook"]
        return secret


def _runs_recorded(home: Path) -> int:
    import sqlite3

    with sqlite3.connect(home / "agentflow.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM runs WHERE trigger = 'webhook'").fetchone()[0])


def run() -> Report:
    from benchmarks.postgres_overhead import temporary_database

    report = Report("webhooks")
    with tempfile.TemporaryDirectory() as directory, temporary_database() as database:
        tmp = Path(directory)
        home = tmp / "data"
        (tmp / "bare_app.py").write_text(BARE_APP)
        env = {
            **os.environ,
            "AGENTFLOW_HOME": str(home),
            "AGENTFLOW_TRACING": "0",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        for name in ("AGENTFLOW_PASSWORD", "AGENTFLOW_DATABASE_URL", "AGENTFLOW_PORT", "AGENTFLOW_HOST"):
            env.pop(name, None)
        app, app_port = _start(_uvicorn("agentflow.web.server:create_app", factory=True), env, ROOT)
        scaled_env = {**env, "AGENTFLOW_HOME": str(tmp / "pg"), "AGENTFLOW_DATABASE_URL": database}
        scaled, scaled_port = _start(
            _uvicorn("agentflow.web.server:create_app", factory=True),
            {**scaled_env, "AGENTFLOW_EXECUTOR": "workers"},
            ROOT,
        )
        bare, bare_port = _start(_uvicorn("bare_app:app"), {**env, "PYTHONPATH": str(tmp)}, tmp)
        try:
            secret = _setup(home, app_port)
            scaled_secret = _setup(tmp / "pg", scaled_port)
            # Warm up: imports, caches, the connections.
            asyncio.run(_load(app_port, _signed(secret, 200, app_port, "warm")))
            asyncio.run(_load(scaled_port, _signed(scaled_secret, 200, scaled_port, "warm")))
            asyncio.run(_load(bare_port, _signed(secret, 200, bare_port, "warm")))
            app_rates: list[float] = []
            scaled_rates: list[float] = []
            bare_rates: list[float] = []
            latencies: list[float] = []
            scaled_latencies: list[float] = []
            accepted = 200
            for index in range(ROUNDS):
                seconds, _, statuses = asyncio.run(
                    _load(bare_port, _signed(secret, DELIVERIES, bare_port, f"b{index}"))
                )
                bare_rates.append(DELIVERIES / seconds)
                seconds, round_latencies, statuses = asyncio.run(
                    _load(app_port, _signed(secret, DELIVERIES, app_port, f"r{index}"))
                )
                assert statuses == {202: DELIVERIES}, statuses
                accepted += DELIVERIES
                app_rates.append(DELIVERIES / seconds)
                latencies += round_latencies
                seconds, round_latencies, statuses = asyncio.run(
                    _load(scaled_port, _signed(scaled_secret, DELIVERIES, scaled_port, f"s{index}"))
                )
                assert statuses == {202: DELIVERIES}, statuses
                scaled_rates.append(DELIVERIES / seconds)
                scaled_latencies += round_latencies
            recorded = _runs_recorded(home)
        finally:
            for process in (app, scaled, bare):
                process.terminate()
                process.wait(timeout=30)
    rate, baseline, scaled_rate = median(app_rates), median(bare_rates), median(scaled_rates)
    cost = baseline / rate
    report.add(
        "signed deliveries accepted durably", rate, "/s", target=">= 500/s", ok=rate >= 500,
        note=f"{CONNECTIONS} connections; the runs execute meanwhile; n8n advertises ~220 executions/s",
    )  # fmt: skip
    report.add("bare FastAPI endpoint answering 202 (same run, same client)", baseline, "/s")
    report.add("cost per delivery vs the bare endpoint", cost, "x", target="<= 3x", ok=cost <= 3)
    report.add("accept latency p50", _quantile(latencies, 0.5), "ms")
    report.add("accept latency p99", _quantile(latencies, 0.99), "ms")
    report.add("runs recorded = deliveries accepted", float(recorded == accepted), "", ok=recorded == accepted,
               note=f"{recorded} runs for {accepted} deliveries")  # fmt: skip
    report.add(
        "scaled out (Postgres, runs queued for workers): deliveries accepted", scaled_rate, "/s",
        note=f"cost {baseline / scaled_rate:.2f}x the bare endpoint; p99 {_quantile(scaled_latencies, 0.99):.0f} ms",
    )  # fmt: skip
    report.details = {"app_rates": app_rates, "scaled_rates": scaled_rates, "bare_rates": bare_rates}
    return report


if __name__ == "__main__":
    main_for(run)
