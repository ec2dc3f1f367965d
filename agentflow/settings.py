"""AGENTFLOW_* settings, read once from the environment into a typed object.

Nothing here imports litellm: `agentflow validate` and `--help` must stay fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Price:
    input_per_token: float
    output_per_token: float


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path = Path("data")
    model: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    llm_timeout: float = 120.0
    llm_retries: int = 2
    max_concurrent_runs: int = 8
    sqlite_synchronous: str = "NORMAL"
    prices: Mapping[str, Price] = field(default_factory=dict)
    daily_budget_usd: float | None = None
    tracing: bool = True
    # The web server (`python app.py`, `agentflow serve`); see agentflow/web/auth.py for the rules.
    host: str = "127.0.0.1"
    port: int = 7860
    user: str = "admin"
    password: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    egress_allow_internal: tuple[str, ...] = ()
    """Internal hosts and ranges the operator opened to network tools (loopback, private...); see trust/egress.py."""
    database_url: str | None = field(default=None, repr=False)
    """Postgres (postgresql://user:pass@host/db): the store, checkpoints and the run queue; None = SQLite in home."""
    executor: str = "local"
    """Who executes queued runs: `local` (this process; the only choice with SQLite) or `workers`
    (the Procrastinate queue on Postgres, for `agentflow worker` processes; the default with Postgres)."""
    worker_heartbeat_s: float = 5.0
    """How often a worker says it is alive; one silent for 3x this is presumed dead and its runs resume elsewhere."""
    # Triggers and channels (docs/triggers.md, docs/channels.md).
    public_url: str | None = None
    """How the world reaches this server (https://flows.example.com): Telegram then delivers by webhook."""
    trust_proxy: bool = False
    """Read the public scheme and host from X-Forwarded-Proto/-Host (behind a TLS proxy): Twilio signs that URL."""
    hook_max_bytes: int = 1024 * 1024
    """The largest webhook body accepted; bigger ones get 413 before anything is parsed."""
    telegram_token: str | None = field(default=None, repr=False)
    telegram_allow: tuple[str, ...] = ()
    """Telegram user ids (or @usernames) served; nobody by default."""
    telegram_secret: str | None = field(default=None, repr=False)
    """The X-Telegram-Bot-Api-Secret-Token of webhook deliveries; default: derived from the bot token."""
    telegram_api: str = "https://api.telegram.org/bot"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    whatsapp_from: str | None = None
    """The Twilio WhatsApp sender, e.g. whatsapp:+14155238886."""
    whatsapp_allow: tuple[str, ...] = ()
    """WhatsApp numbers served (+33612345678); nobody by default."""
    twilio_api: str | None = None
    """Another base URL for Twilio's REST API (a test double, a regional edge); default Twilio's own."""
    # Code nodes and tools (docs/sandbox.md, docs/tools.md): operator configuration, never a workflow's.
    sandbox: str = "auto"
    """Where code runs: auto (Docker when a daemon answers, else gVisor, else bubblewrap), docker, gvisor, bwrap."""
    sandbox_image: str = "agentflow-sandbox:latest"
    """The Docker backend's image, built locally (`agentflow sandbox build`): no registry is needed."""
    sandbox_packages: Path | None = None
    """A directory of Python packages (pip install --target; `agentflow sandbox install`) mounted read-only into
    every sandbox when it exists; default AGENTFLOW_HOME/sandbox-packages."""
    sandbox_max: Mapping[str, float] = field(default_factory=dict)
    """Operator maxima over a code node's limits: memory (MB), cpu (s), wall (s), pids, output (bytes), disk (MB)."""
    search_url: str | None = None
    """web_search's DuckDuckGo HTML endpoint (a mirror, a test double); default https://html.duckduckgo.com/html/."""
    wikipedia_url: str | None = None
    """The wikipedia tool's base URL, `{lang}` in the host or path; default https://{lang}.wikipedia.org."""
    arxiv_url: str | None = None
    """The arxiv tool's API endpoint; default https://export.arxiv.org/api/query."""
    tools_config: Path | None = None
    """The operator's tool file (MCP servers, LangChain tools); default AGENTFLOW_HOME/tools.yaml."""
    embedding_model: str | None = None
    """A LiteLLM embedding model (ollama/nomic-embed-text, openai/text-embedding-3-small): memory recall adds
    vector search to keywords. None: keyword recall only."""
    embedding_api_base: str | None = None
    """Where the embedding model answers; default AGENTFLOW_API_BASE for OpenAI-compatible models, Ollama's
    own (OLLAMA_API_BASE or localhost:11434) for ollama/ models."""
    # The agent registry (docs/agents.md).
    agent_ttl_s: float = 30.0
    """An agent silent for this long is stale, for three times this offline; agents heartbeat every third of it."""
    agent_retention_s: float = 7 * 24 * 3600.0
    """An agent silent for this long is removed from the registry."""
    analyse_model: str | None = None
    """The model `agentflow analyse` and the run console's Analyse button ask (docs/analyse.md); default the chat's."""
    judge_model: str | None = None
    """The LiteLLM model behind LLM judges and the prompt optimiser (`agentflow eval`, docs/evaluate.md)."""

    @property
    def tools_file(self) -> Path:
        return self.tools_config or self.home / "tools.yaml"

    @property
    def workspaces(self) -> Path:
        """Per-workflow file workspaces (read_file, write_file, list_files) live under here."""
        return self.home / "workspaces"

    @property
    def db_path(self) -> Path:
        return self.home / "agentflow.db"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            home=Path(env.get("AGENTFLOW_HOME", "data")),
            model=env.get("AGENTFLOW_MODEL") or None,
            api_base=env.get("AGENTFLOW_API_BASE") or None,
            api_key=env.get("AGENTFLOW_API_KEY") or None,
            llm_timeout=_number(env, "AGENTFLOW_LLM_TIMEOUT", 120.0),
            llm_retries=int(_number(env, "AGENTFLOW_LLM_RETRIES", 2)),
            max_concurrent_runs=int(_number(env, "AGENTFLOW_MAX_CONCURRENT_RUNS", 8)),
            sqlite_synchronous=_choice(env, "AGENTFLOW_SQLITE_SYNCHRONOUS", "NORMAL", ("NORMAL", "FULL")),
            prices=_prices(env.get("AGENTFLOW_PRICES", "")),
            daily_budget_usd=_number(env, "AGENTFLOW_DAILY_BUDGET_USD", 0.0) or None,
            tracing=env.get("AGENTFLOW_TRACING", "1").strip().lower() not in ("0", "false", "no", "off"),
            host=env.get("AGENTFLOW_HOST", "").strip() or "127.0.0.1",
            port=_port(env),
            user=env.get("AGENTFLOW_USER", "").strip() or "admin",
            password=env.get("AGENTFLOW_PASSWORD") or None,
            api_token=env.get("AGENTFLOW_API_TOKEN") or None,
            egress_allow_internal=_list(env.get("AGENTFLOW_EGRESS_ALLOW_INTERNAL", "")),
            database_url=_database_url(env.get("AGENTFLOW_DATABASE_URL", "")),
            executor=_executor(env),
            worker_heartbeat_s=_number(env, "AGENTFLOW_WORKER_HEARTBEAT", 5.0) or 5.0,
            public_url=_public_url(env.get("AGENTFLOW_PUBLIC_URL", "")),
            trust_proxy=env.get("AGENTFLOW_TRUST_PROXY", "").strip().lower() in ("1", "true", "yes", "on"),
            hook_max_bytes=int(_number(env, "AGENTFLOW_HOOK_MAX_BYTES", 1024 * 1024)) or 1024 * 1024,
            telegram_token=env.get("AGENTFLOW_TELEGRAM_TOKEN", "").strip() or None,
            telegram_allow=_list(env.get("AGENTFLOW_TELEGRAM_ALLOW", "")),
            telegram_secret=env.get("AGENTFLOW_TELEGRAM_SECRET", "").strip() or None,
            telegram_api=env.get("AGENTFLOW_TELEGRAM_API", "").strip() or "https://api.telegram.org/bot",
            twilio_account_sid=env.get("AGENTFLOW_TWILIO_ACCOUNT_SID", "").strip() or None,
            twilio_auth_token=env.get("AGENTFLOW_TWILIO_AUTH_TOKEN", "").strip() or None,
            whatsapp_from=env.get("AGENTFLOW_WHATSAPP_FROM", "").strip() or None,
            whatsapp_allow=_list(env.get("AGENTFLOW_WHATSAPP_ALLOW", "")),
            twilio_api=env.get("AGENTFLOW_TWILIO_API", "").strip() or None,
            sandbox=_sandbox(env),
            sandbox_image=env.get("AGENTFLOW_SANDBOX_IMAGE", "").strip() or "agentflow-sandbox:latest",
            sandbox_packages=_optional_path(env.get("AGENTFLOW_SANDBOX_PACKAGES", ""))
            or Path(env.get("AGENTFLOW_HOME", "data")) / "sandbox-packages",
            sandbox_max=_sandbox_max(env.get("AGENTFLOW_SANDBOX_MAX", "")),
            tools_config=_optional_path(env.get("AGENTFLOW_TOOLS_CONFIG", "")),
            search_url=_service_url(env, "AGENTFLOW_SEARCH_URL"),
            wikipedia_url=_service_url(env, "AGENTFLOW_WIKIPEDIA_URL"),
            arxiv_url=_service_url(env, "AGENTFLOW_ARXIV_URL"),
            embedding_model=env.get("AGENTFLOW_EMBEDDING_MODEL", "").strip() or None,
            embedding_api_base=env.get("AGENTFLOW_EMBEDDING_API_BASE", "").strip() or None,
            agent_ttl_s=_duration(env, "AGENTFLOW_AGENT_TTL", 30.0),
            agent_retention_s=_duration(env, "AGENTFLOW_AGENT_RETENTION", 7 * 24 * 3600.0),
            analyse_model=env.get("AGENTFLOW_ANALYSE_MODEL", "").strip() or None,
            judge_model=env.get("AGENTFLOW_JUDGE_MODEL", "").strip() or None,
        )

    @property
    def distributed(self) -> bool:
        """Runs go to the task queue on Postgres and `agentflow worker` processes execute them."""
        return self.executor == "workers"


def _executor(env: Mapping[str, str]) -> str:
    postgres = bool(env.get("AGENTFLOW_DATABASE_URL", "").strip())
    value = env.get("AGENTFLOW_EXECUTOR", "").strip().lower() or ("workers" if postgres else "local")
    if value not in ("local", "workers"):
        raise SettingsError(f"AGENTFLOW_EXECUTOR={value!r} must be local or workers")
    if value == "workers" and not postgres:
        raise SettingsError(
            "AGENTFLOW_EXECUTOR=workers needs the run queue on Postgres: set AGENTFLOW_DATABASE_URL=postgresql://..., "
            "or unset AGENTFLOW_EXECUTOR to run queued runs in this process"
        )
    return value


def _public_url(raw: str) -> str | None:
    url = raw.strip().rstrip("/")
    if not url:
        return None
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise SettingsError(
            f"AGENTFLOW_PUBLIC_URL={raw!r} must be the URL the world reaches this server at, "
            "like https://flows.example.com (Telegram's webhooks need https)"
        )
    return url


def _database_url(raw: str) -> str | None:
    url = raw.strip()
    if not url:
        return None
    scheme = url.partition("://")[0].lower()
    if scheme not in ("postgresql", "postgres") or "://" not in url:
        raise SettingsError(
            f"AGENTFLOW_DATABASE_URL must be a Postgres URL like postgresql://user:password@host:5432/agentflow "
            f"(got scheme {scheme!r}); unset it to keep the embedded SQLite store in AGENTFLOW_HOME"
        )
    return url


SANDBOXES = ("auto", "docker", "gvisor", "bwrap")
SANDBOX_LIMITS = {"memory": "MB", "cpu": "s", "wall": "s", "pids": "processes", "output": "bytes", "disk": "MB"}


def _sandbox(env: Mapping[str, str]) -> str:
    value = env.get("AGENTFLOW_SANDBOX", "").strip().lower() or "auto"
    if value not in SANDBOXES:
        raise SettingsError(
            f"AGENTFLOW_SANDBOX={value!r} must be one of {', '.join(SANDBOXES)} "
            "(auto: Docker when a daemon answers, else gVisor, else bubblewrap)"
        )
    return value


def _sandbox_max(raw: str) -> dict[str, float]:
    """`memory=1024,cpu=60,wall=600`: the largest limits a workflow may ask for."""
    limits: dict[str, float] = {}
    for word in _list(raw):
        key, _, value = word.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if key not in SANDBOX_LIMITS or number <= 0:
            raise SettingsError(
                f"AGENTFLOW_SANDBOX_MAX entry {word!r} must be KEY=NUMBER with KEY one of "
                f"{', '.join(f'{k} ({unit})' for k, unit in SANDBOX_LIMITS.items())}, e.g. memory=1024,wall=600"
            )
        limits[key] = number
    return limits


def _service_url(env: Mapping[str, str], name: str) -> str | None:
    url = env.get(name, "").strip()
    if not url:
        return None
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise SettingsError(
            f"{name}={url!r} must be an absolute http:// or https:// URL; unset it to use the public service"
        )
    return url


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(raw: str) -> float | None:
    """Seconds from `90`, `30s`, `5m`, `24h` or `7d`; None when it is not one, or not positive."""
    text, scale = raw.strip().lower(), 1.0
    if text[-1:] in DURATION_UNITS:
        text, scale = text[:-1], DURATION_UNITS[text[-1]]
    try:
        seconds = float(text) * scale
    except ValueError:
        return None
    return seconds if 0 < seconds < float("inf") else None


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    seconds = parse_duration(raw)
    if seconds is None:
        raise SettingsError(
            f"{name}={raw!r} is not a duration; give seconds or a number with s, m, h or d, e.g. {name}=30s"
        )
    return seconds


def _optional_path(raw: str) -> Path | None:
    return Path(raw.strip()).expanduser() if raw.strip() else None


def _list(raw: str) -> tuple[str, ...]:
    """Comma- or space-separated words."""
    return tuple(word for word in raw.replace(",", " ").split() if word)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; unset it or give e.g. {name}={default:g}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value


def _port(env: Mapping[str, str]) -> int:
    raw = env.get("AGENTFLOW_PORT", "").strip()
    if not raw:
        return 7860
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
        raise SettingsError(f"AGENTFLOW_PORT={raw!r} is not a TCP port; give a number from 1 to 65535, e.g. 7860")
    return int(raw)


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).upper()
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _prices(raw: str) -> dict[str, Price]:
    """`{"ollama/llama3.2": {"input": 0.1, "output": 0.4}}`, in USD per million tokens."""
    if not raw.strip():
        return {}
    try:
        table = json.loads(raw)
        return {
            model: Price(float(price["input"]) / 1e6, float(price["output"]) / 1e6) for model, price in table.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SettingsError(
            'AGENTFLOW_PRICES must be JSON like {"ollama/llama3.2": {"input": 0.1, "output": 0.4}} '
            "(USD per million tokens)"
        ) from None
