"""Chat: the conversation engine's own time per turn, and 50 users through the Gradio API.

(a) Per-turn overhead: an assistant turn that writes a workflow (a tool call, validation,
    a new version with its diff, the messages stored) then answers, against the fake LLM
    with no latency. The time spent inside the model calls is measured and subtracted:
    what is left is the engine's own time, store writes included. p50 and p95 over TURNS.
(b) 50 concurrent users, one plain chat turn each, through the real app — `python app.py` in a
    process of its own, as a person runs it — from `gradio_client`s in a child process, against
    the fake LLM answering after LATENCY s, vs the same 50 turns sent straight to
    `ConversationEngine.handle` with `asyncio.gather` in this process, in the same benchmark run.
    Beside it: the app served from a thread of this process (the harness earlier numbers used,
    which shares this process's GIL with the direct rounds' engine), and one user alone (the
    floor a turn pays for Gradio's queue and its SSE round trips).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Report, main_for, median

TURNS = 60
USERS = 50
LATENCY = 0.05
ROUNDS = 3

WORKFLOW = """apiVersion: agentflow/v1
kind: Workflow
metadata: {{name: shout, description: "turn {turn}"}}
spec:
  inputs: {{text: string}}
  nodes:
    shout: {{type: transform, expr: "join('', [inputs.text, '!'])"}}
  outputs: {{result: "{{{{ shout }}}}"}}
"""


def _settings(home: Path, base_url: str) -> Any:
    from agentflow.settings import Settings

    return Settings(home=home, model="openai/bench", api_base=base_url, api_key="x", llm_retries=0, tracing=False)


async def turn_overhead(tmp: Path, fake: Any, turns: int) -> tuple[list[float], list[float]]:
    from agentflow.chat.engine import ConversationEngine
    from agentflow.runtime import AgentFlow
    from tests.fakes.openai_server import Text, ToolCalls

    counter = {"turn": 0}

    def respond(body: dict[str, Any]) -> Any:
        if body["messages"][-1]["role"] == "tool":
            return Text("Done: it shouts your text.")
        counter["turn"] += 1
        return ToolCalls([("write_workflow", {"yaml": WORKFLOW.format(turn=counter["turn"])})])

    fake.responder = respond
    flow = AgentFlow.open(_settings(tmp / "turns", fake.base_url))
    engine = ConversationEngine(flow)
    llm = flow.engine.services.llm
    inside = {"seconds": 0.0}
    complete = llm.complete

    async def timed_complete(**kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await complete(**kwargs)
        finally:
            inside["seconds"] += time.perf_counter() - started

    llm.complete = timed_complete  # type: ignore[method-assign]
    own, slash = [], []
    try:
        await engine.handle("warm-up", "write it")
        for turn in range(turns):
            inside["seconds"] = 0.0
            started = time.perf_counter()
            reply = await engine.handle(f"s{turn % 5}", "write a workflow that shouts")
            assert reply.valid, reply.text
            own.append((time.perf_counter() - started - inside["seconds"]) * 1000)
            started = time.perf_counter()
            await engine.handle(f"s{turn % 5}", "/show")
            slash.append((time.perf_counter() - started) * 1000)
    finally:
        flow.close()
    return own, slash


CLIENTS = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from gradio_client import Client

url, users, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clients = [Client(url, verbose=False, download_files=False, analytics_enabled=False) for _ in range(users)]

def one_round(number):
    def ask(index):
        text, _ = clients[index].predict(f"hello {index}", f"g{number}-{index}", api_name="/chat")
        assert text, "empty reply"
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        list(pool.map(ask, range(users)))
    return time.perf_counter() - started

one_round(-1)  # warm-up: the server's first model call imports LiteLLM
print(json.dumps([one_round(number) for number in range(rounds)]), flush=True)
"""


def app_process(home: Path, base_url: str) -> Any:
    """`python app.py` on a free port with the fake model; a context manager yielding its URL."""
    import contextlib
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    from benchmarks._common import ROOT

    @contextlib.contextmanager
    def started() -> Any:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {
            **os.environ, "AGENTFLOW_HOME": str(home), "AGENTFLOW_PORT": str(port), "AGENTFLOW_MODEL": "openai/bench",
            "AGENTFLOW_API_BASE": base_url, "AGENTFLOW_API_KEY": "x", "AGENTFLOW_LLM_RETRIES": "0",
            "AGENTFLOW_TRACING": "0", "GRADIO_ANALYTICS_ENABLED": "False",
        }  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, "app.py exited during start-up"
                assert time.monotonic() < deadline, "app.py did not answer /health within 120 s"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                time.sleep(0.2)
            gradio_rounds(url, 1, 1)  # its first turn imports LiteLLM: not what the rounds measure
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    return started()


def gradio_rounds(url: str, users: int, rounds: int) -> list[float]:
    """The users live in a child process, as real users are not in the server's process (nor its GIL)."""
    import json
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", CLIENTS, url, str(users), str(rounds)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the gradio clients failed: {completed.stderr[-2000:]}")
    times: list[float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return times


async def direct_round(engine: Any, users: int, round_number: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(engine.handle(f"d{round_number}-{index}", f"hello {index}") for index in range(users)))
    return time.perf_counter() - started


def run(turns: int = TURNS, users: int = USERS, rounds: int = ROUNDS) -> Report:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from agentflow.chat.engine import ConversationEngine
    from agentflow.runtime import AgentFlow
    from tests.e2e.server import serve
    from tests.fakes.openai_server import FakeLLM, Text

    report = Report("chat")
    with tempfile.TemporaryDirectory() as directory, FakeLLM() as fake:
        tmp = Path(directory)
        own, slash = asyncio.run(turn_overhead(tmp, fake, turns))
        p50, p95 = median(own), statistics.quantiles(own, n=20)[18]
        report.add(
            "engine time per assistant turn, p50 (LLM time excluded)", p50, "ms", target="<= 20 ms", ok=p50 <= 20
        )
        report.add("engine time per assistant turn, p95", p95, "ms")
        report.add("slash command turn (/show), p50 (reference)", median(slash), "ms")

        fake.responder = None
        fake.default = Text("Hi! Describe the workflow you want.", latency=LATENCY)
        direct_flow = AgentFlow.open(_settings(tmp / "direct", fake.base_url))
        engine = ConversationEngine(direct_flow)
        with app_process(tmp / "process", fake.base_url) as url:
            through = gradio_rounds(url, users, rounds)
            alone = gradio_rounds(url, 1, rounds)
        with serve(_settings(tmp / "app", fake.base_url)) as url:
            in_thread = gradio_rounds(url, users, rounds)
        asyncio.run(direct_round(engine, users, -1))  # warm-up
        straight = [asyncio.run(direct_round(engine, users, number)) for number in range(rounds)]
        one = [asyncio.run(direct_round(engine, 1, 100 + number)) for number in range(rounds)]
        direct_flow.close()
        ratio = median(through) / median(straight)
        report.add(f"{users} users through the Gradio API, app in its own process", median(through), "s")
        report.add(f"the same {users} turns straight to the engine", median(straight), "s")
        report.add(
            "ratio Gradio API / engine",
            ratio,
            "x",
            target="<= 2x",
            ok=ratio <= 2.0,
            note=f"fake LLM latency {LATENCY:g} s; rounds {rounds}",
        )
        report.add(
            f"{users} users, app in a thread of the benchmark process (old harness)",
            median(in_thread) / median(straight),
            "x",
        )
        report.add(
            "one user alone: Gradio API turn − engine turn (Gradio's floor)",
            (median(alone) - median(one)) * 1000,
            "ms",
        )
        report.details = {
            "turn_ms": [round(value, 2) for value in own],
            "through": through,
            "straight": straight,
            "in_thread": in_thread,
            "alone": alone,
            "one": one,
        }
    return report


if __name__ == "__main__":
    main_for(run)
