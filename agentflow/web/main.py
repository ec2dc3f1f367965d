"""Start the whole app (web UI, REST API, run executor) in one process: `python app.py`, `agentflow serve`."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger("agentflow")


def ui_builder() -> Callable[[Any], Any] | None:
    """The Gradio UI builder, or None (API only) while `agentflow.web.ui` does not exist yet."""
    try:
        from agentflow.web.ui import build_ui
    except ModuleNotFoundError as exc:
        if exc.name not in ("agentflow.web.ui", "agentflow.web"):
            raise  # the UI exists but one of its own imports is broken: show it
        log.warning("agentflow.web.ui is missing: serving the REST API without the web UI")
        return None
    builder: Callable[[Any], Any] = build_ui
    return builder


def listen(host: str, port: int) -> list[socket.socket]:
    """The server's listening sockets, bound before it starts: a busy port is then one line, not a traceback."""
    from agentflow.settings import SettingsError

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingsError(f"AGENTFLOW_HOST={host!r} is not an address of this machine ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):  # `localhost` may be both 127.0.0.1 and ::1
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # As uvicorn and asyncio do: restart at once over connections still in TIME_WAIT, one family a socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(
                f"port {port} on {host} is in use; "
                "stop the other server or set AGENTFLOW_PORT (or --port) to a free port"
            ) from None
        raise SettingsError(
            f"cannot listen on {host} port {port}: {exc.strerror}; set AGENTFLOW_HOST and AGENTFLOW_PORT "
            "(or --host and --port) to an address of this machine and a free port"
        ) from None
    return sockets


def main() -> int:
    import uvicorn

    from agentflow.settings import Settings, SettingsError
    from agentflow.web.server import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # httpx logs every request's URL at INFO, and a Telegram Bot API URL holds the bot's token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        app = create_app(settings, build_ui=ui_builder())
        host = settings.host.strip("[]")
        sockets = listen(host, settings.port)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=settings.port))
    shown = f"[{host}]" if ":" in host else host
    log.info("AgentFlow starting on http://%s:%d (Ctrl-C to stop)", shown, settings.port)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled once it has shut down; uvicorn.run swallows it too
    finally:
        for sock in sockets:
            sock.close()
    return 0 if server.started else 3  # 3: the app failed to start (uvicorn's exit code for it)
