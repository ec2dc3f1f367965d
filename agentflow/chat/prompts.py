"""The assistant's prompts, loaded by name from `prompts/` (versioned with the code)."""

from __future__ import annotations

import string
from functools import cache
from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@cache
def _template(name: str) -> string.Template:
    path = PROMPTS_DIR / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt '{name}' not found at {path}; prompts live in {PROMPTS_DIR}")
    return string.Template(path.read_text(encoding="utf-8"))


def load_prompt(name: str, **values: object) -> str:
    """The prompt `prompts/<name>.md` with `$placeholders` filled in (unknown ones are left as is)."""
    return _template(name).safe_substitute({key: str(value) for key, value in values.items()})


def example_source(name: str) -> str:
    path = EXAMPLES_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise FileNotFoundError(name)
    return path.read_text(encoding="utf-8")


def example_names() -> list[str]:
    return sorted(path.stem for path in EXAMPLES_DIR.glob("*.yaml"))


def example_summary(name: str) -> str:
    """The first comment line of an example that says what it shows."""
    for line in example_source(name).splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text and "yaml-language-server" not in text:
            return text
    return ""
