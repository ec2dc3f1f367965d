"""The operator's secrets: the only values `${env:NAME}` can reach.

A secret is a named value the operator provides, in one of two places:

- an environment variable `AGENTFLOW_SECRET_<NAME>` of the process that runs workflows;
- a line `NAME=value` in `secrets.env` in the data directory, a file only its owner may read (mode 0600).

Nothing else is resolvable: not provider keys (`OPENAI_API_KEY`), not `PATH`, not
any other variable. A secret shorter than `MIN_SECRET_CHARS` is refused, because
redacting it from logs and traces would corrupt ordinary text (`x` in every word).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

ENV_PREFIX = "AGENTFLOW_SECRET_"
FILE_NAME = "secrets.env"
MIN_SECRET_CHARS = 8
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OperatorSecrets(Mapping[str, str]):
    """Secret name -> value, from `AGENTFLOW_SECRET_*` variables and `secrets.env` (the variables win).

    The file is re-read when it changes, so an operator can add a secret without a restart.
    """

    def __init__(self, home: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = home / FILE_NAME
        self._environ = os.environ if environ is None else environ
        self._stamp: tuple[float, int, int] | None = None
        self._from_file: dict[str, str] = {}
        self._file_problem: str | None = None

    # -- the mapping ------------------------------------------------------------------

    def _values(self) -> dict[str, str]:
        self._reload()
        values = dict(self._from_file)
        for key, value in self._environ.items():
            if key.startswith(ENV_PREFIX) and _NAME.match(key[len(ENV_PREFIX) :]):
                values[key[len(ENV_PREFIX) :]] = value
        return {name: value for name, value in values.items() if len(value) >= MIN_SECRET_CHARS}

    def __getitem__(self, name: str) -> str:
        return self._values()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._values()))

    def __len__(self) -> int:
        return len(self._values())

    # -- explanations -----------------------------------------------------------------

    def why_missing(self, name: str) -> str:
        """Why `${env:NAME}` does not resolve, and how to provide it."""
        self._reload()
        value = self._environ.get(ENV_PREFIX + name, self._from_file.get(name))
        if value is not None and len(value) < MIN_SECRET_CHARS:
            return (
                f"secret {name} is shorter than {MIN_SECRET_CHARS} characters, too short to redact reliably from "
                "logs and traces; give it a longer value"
            )
        hint = f"set {ENV_PREFIX}{name} in the environment of the process that runs workflows, or add {name}=... to "
        hint += f"{self.path} (mode 0600)"
        if self._file_problem:
            hint += f"; note: {self._file_problem}"
        if name in self._environ and not name.startswith(ENV_PREFIX):
            hint += (
                f". The environment variable {name} itself is never resolved: workflows reach only the "
                "operator's secrets"
            )
        return f"secret {name} is not set; {hint}"

    def short_names(self) -> list[str]:
        """Secrets the operator gave that are too short to use (for a start-up warning)."""
        self._reload()
        given = dict(self._from_file)
        prefixed = {key[len(ENV_PREFIX) :]: value for key, value in self._environ.items() if key.startswith(ENV_PREFIX)}
        given.update(prefixed)
        return sorted(name for name, value in given.items() if len(value) < MIN_SECRET_CHARS)

    # -- the file ---------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._from_file, self._file_problem = None, {}, None
            return
        except OSError as exc:
            self._stamp, self._from_file = None, {}
            self._file_problem = f"{self.path} cannot be read ({exc.strerror})"
            return
        stamp = (info.st_mtime, info.st_size, info.st_mode)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            self._from_file = {}
            mode = stat.S_IMODE(info.st_mode)
            self._file_problem = (
                f"{self.path} is ignored because other users may read it (mode {mode:04o}); run chmod 600 {self.path}"
            )
            return
        self._from_file, problems = parse_secrets_file(self.path.read_text(encoding="utf-8", errors="replace"))
        self._file_problem = "; ".join(f"{self.path}:{problem}" for problem in problems) or None


def parse_secrets_file(text: str) -> tuple[dict[str, str], list[str]]:
    """`NAME=value` lines (optionally quoted, `#` comments, `export ` allowed); problems as `line: message`."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not _NAME.match(name):
            problems.append(f"{number}: expected NAME=value, NAME of letters, digits and _")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values, problems
