"""The fake OpenAI-compatible server of `tests/fakes/openai_server.py`, set up for load.

Same app (`build_app`), two differences from its own `--port` mode, both needed at 200
concurrent runs: every request is answered with `Text("ok", latency=...)` (no script to
enqueue), and idle keep-alive connections are kept for 120 s instead of uvicorn's 5 s.
With 5 s, a client whose event loop is saturated can pick a pooled connection the server
has just closed ("Server disconnected" / "Cannot write to closing transport"): AgentFlow,
run with llm_retries=0, then fails the run, while the baseline's OpenAI SDK silently
retries. Real providers keep connections far longer than 5 s, so 120 s is the fair setting.

    python -m benchmarks._fake_server --latency 0.05     # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

KEEP_ALIVE = 120
BACKLOG = 2048


def _config(latency: float) -> Any:
    import uvicorn

    from tests.fakes.openai_server import Text, _Script, build_app

    script = _Script(default=Text("ok", latency=latency))
    return uvicorn.Config(build_app(script), log_level="warning", lifespan="off", timeout_keep_alive=KEEP_ALIVE)


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)  # 200 clients connect at once; the fake's own 128 can overflow
    return sock


def _server(latency: float, on_ready: Any) -> Any:
    from tests.fakes.openai_server import _Server

    return _Server(_config(latency), on_ready)


@contextlib.contextmanager
def serve(mode: str, latency: float) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT/v1`) of a fake served from a child process or a thread."""
    if mode == "thread":
        sock = _bind()
        ready = threading.Event()
        server = _server(latency, ready.set)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        if not ready.wait(15):
            raise RuntimeError("the fake server did not start")
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
        return
    command = [sys.executable, "-m", "benchmarks._fake_server", "--latency", str(latency)]
    from benchmarks._common import ROOT

    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the fake server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._fake_server")
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    sock = _bind()
    port = sock.getsockname()[1]
    _server(args.latency, lambda: print(f"READY {port}", flush=True)).run(sockets=[sock])


if __name__ == "__main__":
    main()
