"""The container images, built and run for real: the app and worker targets, compose.yaml, and a
stack of one app and two workers on the host's PostgreSQL in which a worker executes the run.

Needs a Docker engine and the base image `local/bookworm-slim`: `bash scripts/docker-engine.sh`
(`make docker-engine`) sets up both. `AGENTFLOW_SKIP_DOCKER=1` skips these tests; without it a
missing engine is a failure. The stack uses the PostgreSQL at AGENTFLOW_TEST_POSTGRES (default
postgresql://postgres@127.0.0.1:5432/postgres, trust auth) to create and drop a database of its own.
Run with `pytest -s tests/docker` to see the image sizes and build times.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "local/bookworm-slim"
IMAGES = {"app": "agentflow-app:test", "worker": "agentflow-worker:test"}
POSTGRES = os.environ.get("AGENTFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
# CA certificates this machine added to its trust store (a TLS-inspecting proxy's): the build trusts them too.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
BUILD_TIMEOUT = 1800.0
READY_TIMEOUT = 180.0
RUN_TIMEOUT = 120.0
HELLO = """\
apiVersion: agentflow/v1
kind: Workflow
metadata:
  name: {name}
spec:
  inputs:
    name: {{type: string, default: world}}
  nodes:
    greet:
      type: transform
      expr: "join('', ['Hello, ', inputs.name, '!'])"
  outputs:
    greeting: "{{{{ greet }}}}"
"""
FINISHED = ("succeeded", "failed", "cancelled", "rejected", "budget_exceeded", "waiting_approval")


def docker(*args: str, timeout: float = 120.0, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run the docker CLI; its stdout, or a failure that shows its stderr."""
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`docker {' '.join(args[:3])} …` did not finish within {timeout:.0f} s")
    if check and done.returncode != 0:
        pytest.fail(
            f"`docker {' '.join(args)}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


@pytest.fixture(scope="module")
def engine() -> None:
    if os.environ.get("AGENTFLOW_SKIP_DOCKER") == "1":
        pytest.skip("AGENTFLOW_SKIP_DOCKER=1: the container image tests are skipped")
    if shutil.which("docker") is None:
        pytest.fail("no docker command: run scripts/docker-engine.sh (make docker-engine)")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine answers ({info.stderr.strip()[:300]}): run scripts/docker-engine.sh")
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, check=False).returncode:
        pytest.fail(f"the base image {BASE_IMAGE} is missing: run scripts/docker-engine.sh")


def _build_env() -> dict[str, str]:
    env = dict(os.environ)
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)
    if buildx.returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"  # Debian's engine without the buildx plugin: the classic builder
    return env


@pytest.fixture(scope="module")
def images(engine: None) -> dict[str, int]:
    """Both targets built from the Dockerfile; their sizes in bytes."""
    extra_ca = "\n".join(path.read_text() for path in sorted(LOCAL_CA_DIR.glob("*.crt")))
    sizes: dict[str, int] = {}
    env = _build_env()
    for target in ("worker", "app"):
        started = time.monotonic()
        docker(
            "build", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}",
            "--build-arg", f"EXTRA_CA_CERTS={extra_ca}",
            "--target", target, "-t", IMAGES[target], ".",
            timeout=BUILD_TIMEOUT, env=env,
        )  # fmt: skip
        took = time.monotonic() - started
        sizes[target] = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGES[target]).strip())
        print(f"\nimage {IMAGES[target]}: {sizes[target] / 1e6:.0f} MB, built in {took:.0f} s")
    return sizes


def _in_image(image: str, code: str) -> Any:
    """What a Python snippet printed as JSON inside the image (as its default user)."""
    return json.loads(docker("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", code))


PROBE = """
import importlib.metadata, importlib.util, json, os, sys
import agentflow.cli, agentflow.runtime, agentflow.engine.executor  # what `agentflow worker` imports
loaded = sorted({m.split('.')[0] for m in sys.modules} & {'gradio', 'pandas', 'matplotlib', 'fastapi', 'mlflow'})
def importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False
def distribution(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
print(json.dumps({
    'gradio': importable('gradio'), 'pandas': importable('pandas'),
    # mlflow-skinny ships mlflow/server/ without its dependencies (Flask, SQLAlchemy): not a server.
    'mlflow.server': importable('mlflow.server'), 'mlflow': distribution('mlflow'),
    'uid': os.getuid(), 'home': os.environ.get('AGENTFLOW_HOME'), 'writable': os.access('/data', os.W_OK),
    'loaded': loaded,
}))
"""


def test_worker_image_has_no_web_stack(images: dict[str, int]) -> None:
    found = _in_image(IMAGES["worker"], PROBE)
    web_stack = {name: found[name] for name in ("gradio", "mlflow.server", "mlflow", "pandas")}
    assert web_stack == {"gradio": False, "mlflow.server": False, "mlflow": None, "pandas": False}, found
    assert (found["uid"], found["home"], found["writable"]) == (1000, "/data", True), found
    assert found["loaded"] == [], f"the worker's imports load parts of the web stack: {found['loaded']}"
    assert images["worker"] < images["app"], images


def test_app_image_serves_with_its_prompts(images: dict[str, int]) -> None:
    code = (
        "import json, os, gradio, mlflow.server; from agentflow.chat.prompts import PROMPTS_DIR, EXAMPLES_DIR; "
        "print(json.dumps({'uid': os.getuid(), 'prompts': (PROMPTS_DIR / 'assistant.md').is_file(), "
        "'examples': (EXAMPLES_DIR / 'hello.yaml').is_file(), 'host': os.environ['AGENTFLOW_HOST']}))"
    )
    assert _in_image(IMAGES["app"], code) == {"uid": 1000, "prompts": True, "examples": True, "host": "0.0.0.0"}
    healthcheck = docker("image", "inspect", "-f", "{{json .Config.Healthcheck.Test}}", IMAGES["app"])
    assert "/health" in healthcheck


def _compose() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed: run scripts/docker-engine.sh")


def test_compose_file_is_valid(engine: None) -> None:
    compose = [*_compose(), "-f", str(ROOT / "compose.yaml"), "config"]
    env = {key: value for key, value in os.environ.items() if key != "AGENTFLOW_PASSWORD"}
    missing = subprocess.run(compose, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert missing.returncode != 0 and "set AGENTFLOW_PASSWORD" in missing.stderr, missing.stderr
    valid = subprocess.run(
        compose, capture_output=True, text=True, env={**env, "AGENTFLOW_PASSWORD": "x", "AGENTFLOW_WORKERS": "3"},
        timeout=60, check=False,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    assert "replicas: 3" in valid.stdout and "service_completed_successfully" in valid.stdout, valid.stdout


# -- the stack: migrate, MLflow, the app and two workers on the host's network --------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """Containers started by one test, removed at its end; their logs for failure messages."""

    prefix: str = field(default_factory=lambda: f"agentflow-test-{secrets.token_hex(4)}")
    containers: list[str] = field(default_factory=list)

    def run(self, role: str, image: str, command: list[str], env: dict[str, str], *, detach: bool = True) -> str:
        name = f"{self.prefix}-{role}"
        self.containers.append(name)
        flags = [f"--env={key}={value}" for key, value in env.items()]
        docker(
            "run", *(["--detach"] if detach else []), "--name", name, "--network", "host",
            "--hostname", f"agentflow-{role}", *flags, image, *command,
            timeout=RUN_TIMEOUT,
        )  # fmt: skip
        return name

    def state(self, name: str) -> str:
        return docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name, check=False).strip()

    def logs(self) -> str:
        parts = []
        for name in self.containers:
            done = subprocess.run(["docker", "logs", "--tail", "60", name], capture_output=True, text=True, check=False)
            parts.append(f"--- {name} ({self.state(name)}) ---\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n\ncontainer logs:\n{self.logs()}")

    def remove(self) -> None:
        if self.containers:
            subprocess.run(["docker", "rm", "--force", *self.containers], capture_output=True, check=False)


@pytest.fixture
def stack(images: dict[str, int]) -> Iterator[Stack]:
    containers = Stack()
    try:
        yield containers
    finally:
        containers.remove()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the host's PostgreSQL; its URL. Dropped at the end."""
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    name = f"agentflow_docker_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"no PostgreSQL at {POSTGRES} ({exc}); start it, or set AGENTFLOW_TEST_POSTGRES")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_healthy(stack: Stack, container: str, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not stack.state(container).startswith("running"):
            stack.fail(f"{container} stopped before {url} answered")
        time.sleep(0.5)
    stack.fail(f"{url} did not answer 200 within {READY_TIMEOUT:.0f} s")


def test_workers_execute_runs_queued_by_the_app(stack: Stack, database: str) -> None:
    app_port, mlflow_port = _free_port(), _free_port()
    token = secrets.token_urlsafe(32)
    common = {
        "AGENTFLOW_DATABASE_URL": database,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
    }
    migrate = stack.run("migrate", IMAGES["app"], ["agentflow", "migrate"], common, detach=False)
    if not stack.state(migrate).startswith("exited 0"):
        stack.fail("agentflow migrate failed")
    # The compose file's MLflow sidecar, on a free port.
    mlflow = stack.run(
        "mlflow", IMAGES["app"],
        ["mlflow", "server", "--host=127.0.0.1", f"--port={mlflow_port}", "--workers=1",
         "--backend-store-uri=sqlite:////data/mlflow.db", "--artifacts-destination=/data/mlartifacts",
         "--serve-artifacts"],
        {},
    )  # fmt: skip
    app = stack.run(
        "app", IMAGES["app"], [],
        {**common, "AGENTFLOW_HOST": "127.0.0.1", "AGENTFLOW_PORT": str(app_port),
         "AGENTFLOW_PASSWORD": secrets.token_urlsafe(16), "AGENTFLOW_API_TOKEN": token},
    )  # fmt: skip
    for number in (1, 2):
        stack.run(f"worker-{number}", IMAGES["worker"], [], common)
    _wait_healthy(stack, mlflow, f"http://127.0.0.1:{mlflow_port}/health")
    _wait_healthy(stack, app, f"http://127.0.0.1:{app_port}/health")

    api = httpx.Client(
        base_url=f"http://127.0.0.1:{app_port}/api", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    saved = api.post("/workflows", json={"source": HELLO.format(name="hello-docker")})
    if saved.status_code != 201:
        stack.fail(f"POST /api/workflows answered {saved.status_code}: {saved.text}")
    run_ids = []
    for number in range(4):
        started = api.post("/runs", json={"workflow": "hello-docker", "inputs": {"name": f"worker {number}"}})
        if started.status_code != 202:
            stack.fail(f"POST /api/runs answered {started.status_code}: {started.text}")
        run_ids.append(started.json()["run_id"])

    runs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + RUN_TIMEOUT
    while len(runs) < len(run_ids) and time.monotonic() < deadline:
        for run_id in set(run_ids) - set(runs):
            detail = api.get(f"/runs/{run_id}").json()
            if detail.get("status") in FINISHED:
                runs[run_id] = detail
        time.sleep(0.25)
    if len(runs) < len(run_ids):
        stack.fail(f"{len(run_ids) - len(runs)} of {len(run_ids)} runs did not finish within {RUN_TIMEOUT:.0f} s")

    executors = {}
    for number, run_id in enumerate(run_ids):
        run = runs[run_id]
        if run["status"] != "succeeded" or run.get("outputs") != {"greeting": f"Hello, worker {number}!"}:
            stack.fail(f"run {run_id} did not succeed as expected: {run}")
        executed_by = str(run.get("executed_by"))
        if not executed_by.startswith("agentflow-worker-"):
            stack.fail(f"run {run_id} was executed by {executed_by!r}, not by a worker container: {run}")
        executors[run_id] = executed_by.split(":")[0]
    print(f"\nruns executed by: {sorted(executors.values())}")
