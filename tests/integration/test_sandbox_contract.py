"""The Sandbox contract, run on every backend (docker, gvisor, bwrap): one suite, one fixture, no special cases.

A backend this machine lacks is skipped with its reason (AGENTFLOW_TEST_REQUIRE_SANDBOXES turns that into a
failure). The limits are short so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from agentflow.sandbox import Job, Limits, Sandbox, SandboxUnavailable, open_sandbox
from agentflow.sandbox.programs import Program
from agentflow.sandbox.select import NOTHING, available_backends
from agentflow.settings import Settings
from tests.fakes.sandbox import (
    BACKENDS,
    cpu_gap,
    gvisor_sandboxes,
    host_processes,
    leftover_containers,
    marker,
    open_backend,
    started,
)

pytestmark = pytest.mark.store_agnostic

SHORT = Limits(memory_mb=128, cpu_s=2, wall_s=5, pids=32, output_bytes=100_000, disk_mb=16)


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Sandbox:
    return open_backend(request.param, tmp_path / "home")


def python(code: str, **job: object) -> Job:
    return Job(argv=("python3", "-I", "-c", code), **{"limits": SHORT, **job})  # type: ignore[arg-type]


async def test_python_reads_stdin_and_writes_stdout(sandbox: Sandbox) -> None:
    code = "import json, sys; data = json.load(sys.stdin); print(json.dumps({'sum': sum(data['n'])}))"
    result = await sandbox.run(python(code, stdin=b'{"n": [1, 2, 3]}'))
    assert result.ok, result
    seen = json.loads(result.stdout)
    assert seen.pop("PWD", "/work") == "/work"  # a shell's standard view of the cwd, set by some backends
    assert seen == {"sum": 6}
    assert result.backend == sandbox.name
    assert result.duration_ms > 0


async def test_exit_codes_and_stderr_come_back(sandbox: Sandbox) -> None:
    result = await sandbox.run(python("import sys; print('bad', file=sys.stderr); sys.exit(3)"))
    assert (result.exit_code, result.killed, result.ok) == (3, None, False)
    assert result.stderr.strip() == b"bad"


async def test_files_are_placed_in_the_workdir(sandbox: Sandbox) -> None:
    files = {"script.py": b"print(open('data/in.txt').read().upper())", "data/in.txt": b"hello"}
    result = await sandbox.run(Job(argv=("python3", "-I", "script.py"), files=files, limits=SHORT))
    assert result.ok, result
    assert result.stdout.strip() == b"HELLO"


async def test_a_file_name_outside_the_workdir_is_refused(sandbox: Sandbox) -> None:
    for name in ("../escape.txt", "/etc/x", "a/../../b"):
        with pytest.raises(ValueError, match=r"relative path inside /work"):
            await sandbox.run(Job(argv=("true",), files={name: b"x"}, limits=SHORT))


async def test_the_environment_is_only_what_is_given(sandbox: Sandbox) -> None:
    os.environ["AGENTFLOW_CANARY_ENV"] = "canary-env-value"
    try:
        code = "import json, os; print(json.dumps(dict(os.environ)))"
        result = await sandbox.run(python(code, env={"GREETING": "hi"}))
    finally:
        del os.environ["AGENTFLOW_CANARY_ENV"]
    assert result.ok, result
    seen = json.loads(result.stdout)
    assert seen.pop("PWD", "/work") == "/work"  # a shell's standard view of the cwd, set by some backends
    assert seen == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/work",
        "LANG": "C.UTF-8",
        "PYTHONPATH": "/opt/agentflow/packages",
        "GREETING": "hi",
    }


async def test_a_bad_environment_name_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="must be a name like MY_VAR"):
        await sandbox.run(python("pass", env={"A=B": "x"}))


async def test_it_runs_as_nobody(sandbox: Sandbox) -> None:
    result = await sandbox.run(python("import os; print(os.getuid(), os.getgid(), os.getcwd())"))
    assert result.stdout.split() == [b"65534", b"65534", b"/work"]


async def test_a_workspace_persists_between_jobs(sandbox: Sandbox, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir(mode=0o700)
    (workspace / "seed.txt").write_text("seed")
    first = await sandbox.run(python("open('made.txt', 'w').write(open('seed.txt').read() + '!')", workspace=workspace))
    assert first.ok, first
    assert (workspace / "made.txt").read_text() == "seed!"
    second = await sandbox.run(python("print(open('made.txt').read())", workspace=workspace))
    assert second.stdout.strip() == b"seed!"


async def test_a_fresh_workdir_is_empty_each_time(sandbox: Sandbox) -> None:
    await sandbox.run(python("open('left.txt', 'w').write('x')"))
    result = await sandbox.run(python("import os; print(sorted(os.listdir('.')))"))
    assert result.stdout.strip() == b"[]"


async def test_wall_clock_limit_stops_the_job(sandbox: Sandbox) -> None:
    result = await sandbox.run(python("import time; time.sleep(1e9)", limits=Limits(wall_s=1)))
    assert (result.exit_code, result.killed) == (None, "wall")


async def test_cpu_limit_stops_the_job(sandbox: Sandbox, request: pytest.FixtureRequest) -> None:
    cpu_gap(sandbox, request)
    result = await sandbox.run(python("while True: pass", limits=Limits(cpu_s=1, wall_s=10)))
    assert (result.exit_code, result.killed) == (None, "cpu")


async def test_memory_limit_holds(sandbox: Sandbox) -> None:
    code = "chunks = []\nwhile True: chunks.append(bytearray(4 * 1024 * 1024))"
    result = await sandbox.run(python(code, limits=Limits(memory_mb=96, wall_s=20)))
    # rlimits make the allocation fail (MemoryError, exit 1); a cgroup or container OOM kill says "memory".
    assert (result.exit_code, result.killed) in ((1, None), (None, "memory")), result
    if result.killed is None:
        assert b"MemoryError" in result.stderr


async def test_output_over_the_cap_is_cut_and_stops_the_job(sandbox: Sandbox) -> None:
    code = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    result = await sandbox.run(python(code, limits=Limits(output_bytes=10_000, wall_s=20)))
    assert (result.exit_code, result.killed, result.truncated) == (None, "output", True)
    assert result.stdout == b"x" * 10_000


async def test_cancelling_run_leaves_nothing_behind(sandbox: Sandbox) -> None:
    word = marker()
    # sh keeps the marker in its argv while it waits for sleep, so the host can see the job.
    job = Job(argv=("sh", "-c", "sleep 1000; : " + word, word), limits=Limits(wall_s=60))
    task = asyncio.ensure_future(sandbox.run(job))
    while not started(sandbox, word) and not task.done():
        await asyncio.sleep(0.05)  # polling an observable state: the sandboxed job appearing on the host
    assert started(sandbox, word), "the job never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert host_processes(word) == []
    if sandbox.name == "gvisor":
        assert gvisor_sandboxes() == []
    if sandbox.name == "docker":
        assert leftover_containers(sandbox.instance) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", BACKENDS)
async def test_the_packages_dir_is_importable_and_read_only(tmp_path: Path, name: str) -> None:
    packages = tmp_path / "packages"
    (packages / "tinymod").mkdir(parents=True)
    (packages / "tinymod" / "__init__.py").write_text("ANSWER = 42\n")
    packages.chmod(0o755)
    sandbox = open_backend(name, tmp_path / "home", packages)
    code = (
        "import tinymod, sys\nprint(tinymod.ANSWER)\n"
        "try:\n    open('/opt/agentflow/packages/evil.py', 'w')\n"
        "except OSError as exc:\n    print('refused', exc.errno)"
    )
    result = await sandbox.run(Job(argv=("python3", "-c", code), limits=SHORT))
    assert result.ok, result
    lines = result.stdout.decode().split()
    assert lines[:2] == ["42", "refused"]
    assert not (packages / "evil.py").exists()


async def test_a_python_program_round_trips_through_the_harness(sandbox: Sandbox) -> None:
    program = Program("python", "result = {'doubled': [n * 2 for n in inputs]}\nprint('log line')")
    job, mark = program.job([1, 2], SHORT)
    result = await sandbox.run(job)
    assert result.ok, result
    value, log = program.outcome(result, mark)
    assert value == {"doubled": [2, 4]}
    assert log.strip() == "log line"


def test_an_explicit_backend_that_cannot_run_says_why(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "packages.txt"
    not_a_directory.write_text("")
    settings = Settings(home=tmp_path, sandbox="bwrap", sandbox_packages=not_a_directory)
    with pytest.raises(SandboxUnavailable, match=r"AGENTFLOW_SANDBOX=bwrap cannot run here: .*is not a directory"):
        open_sandbox(settings)


def test_with_nothing_available_code_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, runsc or prlimit to be found
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    settings = Settings(home=tmp_path, sandbox="auto", sandbox_image="agentflow-sandbox:absent")
    with pytest.raises(SandboxUnavailable) as raised:
        open_sandbox(settings)
    assert str(raised.value) == NOTHING
    assert all(available_backends(settings).values())
