"""Who may call what on the one-process server: the access rules and the ASGI middleware enforcing them.

Auth is off when the server is bound to loopback and no password is set. Bound
to any other address, the server refuses to start without AGENTFLOW_PASSWORD.
With a password, every request is checked here before it reaches a route:

- `/health` is public (exact path only);
- `/api/...` needs `Authorization: Bearer <token>`;
- prefixes registered with `protect_prefix` (e.g. `/mlflow`), and everything
  else, including the Gradio UI mounted at `/`, need the bearer token or a
  valid Gradio login session. Anonymous requests may reach only the Gradio
  login page and its static assets (`GRADIO_LOGIN_PATHS`), where Gradio's own
  `auth=` still applies; a browser opening any other page is sent to the login.

The token is AGENTFLOW_API_TOKEN, or else derived from the password and
printed once at start-up, so the API can be scripted with the password alone.
To compute the derived token yourself:

    python -c 'from agentflow.web.auth import derive_api_token as d; print(d("PASSWORD", "admin"))'

A Gradio login session is the cookie `access-token-<cookie_id>` (Secure) or
`access-token-unsecure-<cookie_id>` that Gradio sets on `POST /login`; it is
valid while its value is a key of the mounted Gradio app's `tokens` table
(`GET /logout` removes it). Cookie-authenticated POST/PUT/PATCH/DELETE must come
from the same origin.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agentflow.settings import Settings, SettingsError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
TOKEN_LABEL = b"agentflow-api-token/v1:"
MIN_TOKEN_LENGTH = 16
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What an anonymous browser needs to show Gradio's login form and post it (checked with Chromium).
GRADIO_LOGIN_PATHS = frozenset(
    {"/", "/login", "/login/", "/theme.css", "/favicon.ico", "/manifest.json", "/robots.txt"}
)
GRADIO_LOGIN_PREFIXES = ("/assets/", "/static/")
# Dot segments, or slashes and dots still percent-encoded after the server decoded the path once.
_SUSPICIOUS_PATH = re.compile(r"(^|/)\.{1,2}(/|$)|%2e|%2f|%5c|\\|\x00", re.IGNORECASE)


class Access(Enum):
    PUBLIC = "public"  # anyone
    TOKEN = "token"  # the API bearer token
    SESSION = "session"  # the bearer token or a Gradio login session


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The effective credentials; `enabled` is False only on loopback without a password."""

    enabled: bool
    user: str = "admin"
    password: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    token_derived: bool = False


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def derive_api_token(password: str, user: str) -> str:
    """The API token used when AGENTFLOW_API_TOKEN is unset: HMAC-SHA256(password, label + user), hex."""
    return hmac.new(password.encode(), TOKEN_LABEL + user.encode(), hashlib.sha256).hexdigest()


def auth_config(settings: Settings) -> AuthConfig:
    """Decide whether auth is on; refuse (SettingsError) an exposed server without a password."""
    if not settings.password:
        if not is_loopback(settings.host):
            raise SettingsError(
                f"AGENTFLOW_HOST={settings.host} makes AgentFlow reachable from other machines, so it needs a "
                "password: set AGENTFLOW_PASSWORD (and optionally AGENTFLOW_USER, default 'admin'), "
                "or bind to this machine only with AGENTFLOW_HOST=127.0.0.1"
            )
        if settings.api_token:
            raise SettingsError(
                "AGENTFLOW_API_TOKEN is set but AGENTFLOW_PASSWORD is not; the API and the UI are protected only "
                "when a password is set: set AGENTFLOW_PASSWORD too, or unset AGENTFLOW_API_TOKEN"
            )
        return AuthConfig(enabled=False)
    if settings.api_token is not None and len(settings.api_token) < MIN_TOKEN_LENGTH:
        raise SettingsError(
            f"AGENTFLOW_API_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters; generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    token = settings.api_token or derive_api_token(settings.password, settings.user)
    return AuthConfig(
        enabled=True,
        user=settings.user,
        password=settings.password,
        api_token=token,
        token_derived=settings.api_token is None,
    )


class SessionSource(Protocol):
    """What we read from a mounted Gradio app (`gradio.routes.App`)."""

    @property
    def cookie_id(self) -> str: ...
    @property
    def tokens(self) -> Mapping[str, str]: ...


class GradioSessions:
    """Validates Gradio's login cookies against the mounted Gradio app's session table."""

    def __init__(self) -> None:
        self._app: SessionSource | None = None

    def attach(self, app: SessionSource) -> None:
        self._app = app

    def user(self, headers: Headers) -> str | None:
        """The logged-in user named by the request's Gradio cookie, or None."""
        app = self._app
        cookie_header = headers.get("cookie")
        if app is None or not cookie_header:
            return None
        cookies = cookie_parser(cookie_header)
        # Gradio sets both on login: the first is Secure (https), the second works over plain http.
        for name in (f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}"):
            token = cookies.get(name)
            if token and (user := app.tokens.get(token)):
                return user
        return None


@dataclass(slots=True)
class _Rule:
    prefix: str
    access: Access
    exact: bool = False

    def matches(self, path: str) -> bool:
        if self.exact:
            return path == self.prefix
        base = self.prefix.rstrip("/")
        return path == base or path.startswith(base + "/")


class AccessPolicy:
    """The allow-list: which credentials each path needs; the longest matching rule wins."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.sessions = GradioSessions()
        self._rules = [
            _Rule("/health", Access.PUBLIC, exact=True),
            _Rule("/api", Access.TOKEN),
            # The API docs page is opened by a browser, which carries the login cookie, not the token.
            _Rule("/api/docs", Access.SESSION, exact=True),
            _Rule("/api/docs/oauth2-redirect", Access.SESSION, exact=True),
            _Rule("/api/openapi.json", Access.SESSION, exact=True),
        ]

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def protect_prefix(self, prefix: str) -> None:
        """Require the token or a Gradio login under `prefix` (for mounted apps such as `/mlflow`)."""
        self._rules.append(_Rule(_normalized(prefix), Access.SESSION))

    def allow_public(self, prefix: str) -> None:
        """Let anyone reach `prefix`: only for routes that authenticate each request themselves (signed webhooks)."""
        self._rules.append(_Rule(_normalized(prefix), Access.PUBLIC))

    def access(self, path: str) -> Access:
        matching = [rule for rule in self._rules if rule.matches(path)]
        if not matching:
            return Access.SESSION
        return max(matching, key=lambda rule: (len(rule.prefix), rule.exact)).access

    def token_is_valid(self, headers: Headers) -> bool:
        expected = self.config.api_token
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if not expected or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), expected.encode())


def _normalized(prefix: str) -> str:
    if not prefix.startswith("/") or _SUSPICIOUS_PATH.search(prefix):
        raise ValueError(f"prefix {prefix!r} must be an absolute path such as '/mlflow'")
    return prefix.rstrip("/") or "/"


def _is_gradio_login_path(path: str) -> bool:
    return path in GRADIO_LOGIN_PATHS or path.startswith(GRADIO_LOGIN_PREFIXES)


def _same_origin(headers: Headers) -> bool:
    """False for a browser request sent by another site (CSRF riding on the login cookie)."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


class AuthMiddleware:
    """Pure ASGI (streaming responses pass through untouched); enforces an `AccessPolicy`."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if _SUSPICIOUS_PATH.search(path):
            await self._deny(scope, receive, send, 400, "the path has '.' or '..' segments or encoded separators")
            return
        if not self.policy.enabled:
            await self.app(scope, receive, send)
            return
        denial = self._check(scope, path)
        if denial is None:
            await self.app(scope, receive, send)
        else:
            await denial(scope, receive, send)

    def _check(self, scope: Scope, path: str) -> ASGIApp | None:
        """None to let the request through, else the response refusing it."""
        access = self.policy.access(path)
        if access is Access.PUBLIC:
            return None
        headers = Headers(scope=scope)
        if self.policy.token_is_valid(headers):
            return None
        if access is Access.TOKEN:
            return _refusal(
                scope,
                401,
                "this API needs a token: send 'Authorization: Bearer <token>' with AGENTFLOW_API_TOKEN, "
                "or the token AgentFlow printed at start-up (derived from AGENTFLOW_PASSWORD)",
            )
        if self.policy.sessions.user(headers) is not None:
            method = scope.get("method", "GET")
            if method in UNSAFE_METHODS and not _same_origin(headers):
                return _refusal(scope, 403, "cross-site request refused; use the AgentFlow page itself")
            return None
        if _is_gradio_login_path(path):
            return None  # the login form itself; Gradio's auth guards its data routes
        if scope.get("method") in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
            return RedirectResponse("/", status_code=303)  # a browser: show the login form
        return _refusal(
            scope, 401, "log in on the AgentFlow page first, or send 'Authorization: Bearer <token>' (API token)"
        )

    async def _deny(self, scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        await _refusal(scope, status, detail)(scope, receive, send)


def _refusal(scope: Scope, status: int, detail: str) -> ASGIApp:
    if scope["type"] == "websocket":

        async def close(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})

        return close
    headers = {"WWW-Authenticate": 'Bearer realm="agentflow"'} if status == 401 else None
    response: Response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    return response
