"""Browser tests: a failing one shows how the Chat tab's checks and saves reached the server."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def chat_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agentflow.web.ui.chat")
