"""`prompts:/NAME@ALIAS` and `prompts:/NAME/VERSION`: what a prompt field may hold instead of a template.

Pure parsing, no MLflow: the language's validation uses it, and agent processes import it freely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeGuard

PREFIX = "prompts:/"
NAME = r"[A-Za-z0-9_.-]+"  # MLflow's own rule for prompt names
ALIAS = r"[A-Za-z0-9_-]+"
_REF = re.compile(rf"^prompts:/(?P<name>{NAME})(?:@(?P<alias>{ALIAS})|/(?P<version>[1-9][0-9]*))$")
_NAME = re.compile(rf"^{NAME}$")
FIELDS = {"llm": ("prompt", "system"), "agent": ("instructions", "input")}
"""The fields of each node type (and its variants) that may hold a reference, the main prompt first."""
EXAMPLE = "prompts:/triage.classify@production"


class PromptRefError(ValueError):
    """A text that starts like a reference but is not one; the message says how to write it."""


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A registry prompt, by alias or by version number."""

    name: str
    alias: str | None = None
    version: int | None = None

    @property
    def uri(self) -> str:
        return f"{PREFIX}{self.name}@{self.alias}" if self.alias else f"{PREFIX}{self.name}/{self.version}"

    @property
    def selector(self) -> str:
        """`@production` or `/3`."""
        return f"@{self.alias}" if self.alias else f"/{self.version}"


def is_ref(text: object) -> TypeGuard[str]:
    """Whether a field's value means a registry prompt (it starts with `prompts:/`), well written or not."""
    return isinstance(text, str) and text.strip().startswith(PREFIX)


def parse_ref(text: str) -> PromptRef:
    """The reference in `text`; PromptRefError saying how to write one when it is malformed."""
    match = _REF.match(text.strip())
    if match is None:
        raise PromptRefError(
            f"'{text.strip()}' is not a prompt reference; write prompts:/NAME@ALIAS or prompts:/NAME/VERSION "
            f"(e.g. {EXAMPLE}; a name is letters, digits, '.', '_' and '-'), or write the prompt itself"
        )
    version = match.group("version")
    return PromptRef(match.group("name"), match.group("alias"), int(version) if version else None)


def check_name(name: str) -> str:
    """A prompt name as MLflow accepts it, or a PromptRefError saying what is wrong."""
    if not _NAME.match(name):
        raise PromptRefError(f"'{name}' is not a prompt name; use letters, digits, '.', '_' and '-'")
    return name


def parse_target(text: str) -> PromptRef:
    """`NAME`, `NAME@ALIAS`, `NAME/VERSION` or a whole `prompts:/...` reference (what `prompts show` takes);
    a bare name means its `latest` version."""
    text = text.strip()
    if not text.startswith(PREFIX):
        text = PREFIX + (text if ("@" in text or "/" in text) else f"{text}@latest")
    return parse_ref(text)
