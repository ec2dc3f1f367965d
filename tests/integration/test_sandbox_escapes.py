"""SECURITY.md's sandbox corpus, every case on every available backend: contained, a clear Result, the host
unaffected, no canary seen.

Each case runs hostile code under short limits (wall 5 s, CPU 2 s, 128 MB) and checks what the sandbox
reported and what the host can observe afterwards.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.sandbox import Job, Limits, Result, Sandbox
from tests.fakes.sandbox import BACKENDS, cpu_gap, host_processes, loopback_listener, marker, open_backend

pytestmark = pytest.mark.store_agnostic

SHORT = Limits(memory_mb=128, cpu_s=2, wall_s=5, pids=32, output_bytes=100_000, disk_mb=16)
CANARY = "agentflow-canary-7f3a9c"


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sandbox]:
    os.environ["AGENTFLOW_ESCAPE_CANARY"] = CANARY
    try:
        yield open_backend(request.param, tmp_path / "home")
    finally:
        del os.environ["AGENTFLOW_ESCAPE_CANARY"]


async def run(sandbox: Sandbox, code: str, limits: Limits = SHORT, **job: object) -> Result:
    result = await sandbox.run(Job(argv=("python3", "-I", "-c", code), limits=limits, **job))  # type: ignore[arg-type]
    assert CANARY.encode() not in result.stdout + result.stderr
    return result


async def test_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = await run(sandbox, code)
    if sandbox.name == "gvisor":
        # gVisor's kernel shares the job's pids budget and gives up: the sandbox dies, the host does not notice.
        assert result.exit_code not in (0, None) or result.killed, result
    else:
        assert result.exit_code is None and result.killed in ("wall", "cpu", "pids", "memory"), result
    after = await run(sandbox, "print('still fine')")
    assert after.stdout.strip() == b"still fine"


async def test_a_huge_allocation_fails_inside(sandbox: Sandbox) -> None:
    result = await run(sandbox, "bytearray(10**10)")
    assert (result.exit_code, result.killed) in ((1, None), (None, "memory")), result
    if result.exit_code == 1:
        assert b"MemoryError" in result.stderr


async def test_four_busy_threads_hit_the_cpu_limit(sandbox: Sandbox, request: pytest.FixtureRequest) -> None:
    cpu_gap(sandbox, request)
    code = (
        "import threading\n"
        "def spin():\n    while True: pass\n"
        "for _ in range(4): threading.Thread(target=spin).start()\n"
    )
    result = await run(sandbox, code, Limits(memory_mb=128, cpu_s=2, wall_s=10))
    assert (result.exit_code, result.killed) == (None, "cpu"), result


async def test_sleeping_forever_hits_the_wall_clock(sandbox: Sandbox) -> None:
    result = await run(sandbox, "import time; time.sleep(1e9)", Limits(wall_s=2))
    assert (result.exit_code, result.killed) == (None, "wall")


@pytest.fixture
def canary_database(tmp_path: Path) -> Path:
    database = tmp_path / "home" / "agentflow.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as connection:
        connection.execute("create table secrets (value text)")
        connection.execute("insert into secrets values (?)", (CANARY,))
    return database


async def test_host_files_are_not_there(sandbox: Sandbox, canary_database: Path) -> None:
    targets = ["/etc/shadow", str(canary_database), str(Path.home() / ".ssh"), "/root", "/proc/1/environ"]
    code = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        with open(path, 'rb') as handle: data = handle.read()\n"
        "        print(path, 'READ', data[:2000])\n"
        "    except OSError as exc:\n"
        "        print(path, 'REFUSED', type(exc).__name__)\n"
    )
    result = await sandbox.run(Job(argv=("python3", "-I", "-c", code, *targets), limits=SHORT))
    assert result.ok, result
    lines = dict(line.split(" ", 1) for line in result.stdout.decode().splitlines())
    for path in targets[:-1]:
        assert lines[path].startswith("REFUSED"), (path, lines[path])
    # /proc/1 is the sandbox's own first process: readable or not, never the host's environment.
    assert CANARY.encode() not in result.stdout


async def test_the_environment_has_no_canary(sandbox: Sandbox) -> None:
    result = await run(sandbox, "import os; print(dict(os.environ)); print(open('/proc/self/environ').read())")
    assert result.ok, result


async def test_writes_outside_the_workdir_fail(sandbox: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    code = (
        "import os\n"
        "os.symlink(os.environ['TARGET'], 'link')\n"
        "for path in ('/evil', '../evil', '/usr/evil', '/etc/evil', 'link/evil'):\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print(path, 'WROTE')\n"
        "    except OSError as exc:\n"
        "        print(path, 'REFUSED', exc.errno)\n"
    )
    result = await run(sandbox, code, env={"TARGET": str(outside)})
    assert result.ok, result
    assert b"WROTE" not in result.stdout, result.stdout
    assert list(outside.iterdir()) == []
    assert not Path("/evil").exists()


async def test_the_network_is_unreachable(sandbox: Sandbox) -> None:
    with loopback_listener() as listener:
        code = (
            "import socket, sys\n"
            "for host, port in (('1.1.1.1', 53), ('169.254.169.254', 80), ('127.0.0.1', int(sys.argv[1]))):\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=2).close()\n"
            "        print(host, 'CONNECTED')\n"
            "    except OSError as exc:\n"
            "        print(host, 'REFUSED', exc)\n"
            "try:\n"
            "    print('dns', socket.getaddrinfo('example.com', 80))\n"
            "except OSError as exc:\n"
            "    print('dns REFUSED', exc)\n"
        )
        result = await sandbox.run(Job(argv=("python3", "-I", "-c", code, str(listener.port)), limits=SHORT))
    assert result.ok, result
    assert b"CONNECTED" not in result.stdout, result.stdout
    assert b"dns REFUSED" in result.stdout
    assert listener.connections == []


async def test_a_flood_of_stdout_is_capped(sandbox: Sandbox) -> None:
    code = "import sys\nblock = b'y' * (1 << 20)\nfor _ in range(1024): sys.stdout.buffer.write(block)"
    result = await run(sandbox, code, Limits(output_bytes=100_000, wall_s=20))
    assert (result.killed, result.truncated, len(result.stdout)) == ("output", True, 100_000)


async def test_filling_the_disk_stops_at_its_size(sandbox: Sandbox) -> None:
    free_before = shutil.disk_usage("/tmp").free
    code = (
        "import sys\n"
        "for place in ('/work/fill', '/tmp/fill'):\n"
        "    written = 0\n"
        "    try:\n"
        "        with open(place, 'wb') as out:\n"
        "            while written < 200 * 2**20:\n"
        "                out.write(b'z' * 2**20); out.flush(); written += 2**20\n"
        "        print(place, 'FILLED', written)\n"
        "    except OSError as exc:\n"
        "        print(place, 'STOPPED', written, exc.errno)\n"
    )
    result = await run(sandbox, code, Limits(disk_mb=16, memory_mb=128, wall_s=20))
    assert b"FILLED" not in result.stdout, result
    assert result.ok or result.killed == "disk", result
    # At most the limit landed anywhere; the host did not lose the 400 MB the program tried to write.
    assert free_before - shutil.disk_usage("/tmp").free < 100 * 2**20


async def test_filling_a_workspace_is_stopped(sandbox: Sandbox, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    code = (
        "import os\n"
        "for n in range(200):\n"
        "    with open(f'part{n}', 'wb') as out: out.write(b'z' * 2**20)\n"
        "print('FILLED')\n"
    )
    result = await run(sandbox, code, Limits(disk_mb=16, wall_s=20), workspace=workspace)
    # A host directory has no size of its own: the sandbox watches it and fails the job (see docs/sandbox.md).
    assert (result.exit_code, result.killed) == (None, "disk"), result
    used = sum(path.stat().st_size for path in workspace.iterdir())
    assert used <= 200 * 2**20


async def test_a_background_child_dies_with_the_job(sandbox: Sandbox) -> None:
    word = marker()
    code = "import subprocess, sys\nsubprocess.Popen(['sh', '-c', 'sleep 1000; : ' + sys.argv[1]])\nprint('left it')"
    result = await sandbox.run(Job(argv=("python3", "-I", "-c", code, word), limits=SHORT))
    assert result.ok, result
    assert host_processes(word) == []
