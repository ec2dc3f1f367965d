"""What is installed is what the lock file says, and nothing known to be malicious."""

from __future__ import annotations

import re
import site
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][^\\\n]*?)\s*\\?$", re.MULTILINE)


def locked() -> dict[str, str]:
    """name -> version of every pin that applies to this machine (markers evaluated)."""
    pins = {}
    for line in PIN.findall((ROOT / "requirements.lock").read_text()):
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return pins


def test_every_locked_package_is_installed_at_its_locked_version() -> None:
    pins = locked()
    assert {"litellm", "langgraph", "gradio", "mlflow", "pyyaml"} <= set(pins)
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert not wrong, f"installed versions differ from requirements.lock (locked, installed): {wrong}; make install"


def test_the_lock_meets_the_security_floors() -> None:
    pins = {name: Version(version) for name, version in locked().items()}
    assert pins["litellm"] >= Version("1.83") and str(pins["litellm"]) not in ("1.82.7", "1.82.8")
    assert pins["langgraph-checkpoint"] >= Version("3.0")
    assert pins["langgraph-checkpoint-sqlite"] >= Version("3.0.1")
    assert pins["gradio"] >= Version("6.7")
    assert pins["mlflow"] >= Version("3.11")
    assert "--hash=sha256:" in (ROOT / "requirements.lock").read_text()


def test_no_litellm_startup_hook_is_installed() -> None:
    # litellm 1.82.8 shipped litellm_init.pth, which ran at every Python start and stole credentials.
    folders = {Path(sysconfig.get_paths()["purelib"]), *map(Path, site.getsitepackages())}
    assert not [path for folder in folders for path in folder.glob("litellm_init*.pth")]
