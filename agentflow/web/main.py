"""Start the whole app (web UI, REST API, run executor) in one process: `python app.py`, `agentflow serve`."""

from __future__ import annotations

import logging
import os
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


def main() -> int:
    import uvicorn

    from agentflow.settings import Settings, SettingsError
    from agentflow.web.server import create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        app = create_app(settings, build_ui=ui_builder())
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host.strip("[]"), port=settings.port)
    return 0
