"""Deployments in a real browser: the Workflows tab deploys a version (refused until it is granted), shows its
new webhook secret once, its live triggers with the next fire time in the schedule's zone, the last
deliveries and the history; the Settings tab says how to connect Telegram and WhatsApp.

Playwright drives Debian's Chromium against the real server (fixtures in test_browser.py and server.py).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agentflow.cli_triggers import fire_time
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.base import Delivery
from agentflow.web.ui.settings import channels_text
from tests.e2e.server import fake_settings, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (browser is a fixture)
from tests.fakes.openai_server import FakeLLM
from tests.integration.helpers import PERSON, workflow

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),  # raised inside gradio's queue
]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PUBLIC_URL = "https://flows.example.com"
# New Year's morning only: the server's scheduler never fires it while the test runs.
TRIAGE = workflow(
    "triage",
    """
    inputs: {ticket: {type: string}}
    triggers:
      - webhook: {inputs: {ticket: issue.title}}
      - schedule: {cron: "0 9 1 1 *", timezone: Europe/Paris, inputs: {ticket: yearly review}}
    nodes:
      echo: {type: transform, expr: "inputs.ticket"}
    outputs: {result: "{{ echo }}"}
    """,
)


@contextmanager
def beside(settings: Settings) -> Iterator[AgentFlow]:
    """Another process on the server's data directory, as `agentflow grant` is."""
    flow = AgentFlow.open(settings)
    try:
        yield flow
    finally:
        flow.close()


def test_deploy_from_the_workflows_tab_and_connect_channels_in_settings(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    settings = replace(
        fake_settings(tmp_path / "data", fake_llm),
        public_url=PUBLIC_URL,
        telegram_allow=("123456789", "@ada"),
    )
    with beside(settings) as flow:
        stored = flow.save_workflow(TRIAGE)  # as the assistant saves one: nothing granted yet
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    with serve(settings) as url:
        page = context.new_page()
        page.goto(f"{url}/?tab=workflows&workflow=triage")
        section, result, triggers = (
            page.locator("#workflow-deployment"),
            page.locator("#deploy-result"),
            page.locator("#workflow-triggers"),
        )
        expect(page.locator("#workflow-heading")).to_contain_text("triage v1")
        expect(section).to_contain_text("Not deployed: no webhook, schedule or chat message starts it")
        expect(page.locator("#rollback-button")).to_be_disabled()
        expect(page.locator("#undeploy-button")).to_be_disabled()

        # Ungranted: the deploy is refused, saying how to grant.
        deploy = page.locator("#deploy-button")
        expect(deploy).to_have_text("Deploy v1")
        deploy.click()
        expect(result).to_contain_text("Not done: workflow 'triage' version")
        expect(result).to_contain_text("needs a person's grant before it can run: started by signed webhooks")
        expect(result).to_contain_text(f"agentflow grant triage --version {stored.version}")
        expect(section).to_contain_text("Not deployed")

        # Granted (as `agentflow grant` does, beside the server), the deploy goes through.
        with beside(settings) as flow:
            flow.grant_version(stored, by=PERSON)
        deploy.click()
        expect(result).to_contain_text("Deployed 'triage' v1.")
        with beside(settings) as flow:
            [secret] = flow.store.hook_secrets("triage", "webhook", now=time.time())
            [schedule] = flow.store.schedules("triage")
        expect(result).to_contain_text("shown only this once")
        expect(result.locator("pre code")).to_have_text(secret.secret)
        expect(result.locator("button")).to_be_visible()  # Gradio's copy button on the secret's block
        expect(section).to_contain_text("v1 is deployed — deployed by web:local")
        expect(page.locator("#rollback-button")).to_be_disabled()  # nothing deployed before it
        expect(page.locator("#undeploy-button")).to_be_enabled()

        # The triggers table: the webhook's URL; the schedule's next fire in its own zone.
        next_fire = fire_time(schedule.next_fire_at, "Europe/Paris")
        assert re.fullmatch(r"\d{4}-01-01 09:00 CET \(Europe/Paris\)", next_fire), next_fire
        hook_row = triggers.locator("table.workflow-triggers tbody tr").filter(has_text="webhook")
        expect(hook_row).to_contain_text(f"{PUBLIC_URL}/api/hooks/triage/webhook")
        expect(hook_row).to_contain_text("signed (Standard Webhooks), inputs ticket from the body")
        schedule_row = triggers.locator("table.workflow-triggers tbody tr").filter(has_text="cron")
        expect(schedule_row).to_contain_text("cron '0 9 1 1 *' (Europe/Paris), misfire once")
        expect(schedule_row).to_contain_text(next_fire)
        expect(triggers).to_contain_text("Last deliveries: none yet.")
        expect(triggers.locator("ul.deployment-history li")).to_have_text(
            [re.compile(r"deploy v1 by web:local \(the Workflows tab\)$")]
        )
        shot(page, "50-deployed-with-secret")

        # What the world sent shows up in the tab, each run linked; the secret is not shown again.
        with beside(settings) as flow:
            run = flow.submit(stored, {"ticket": "printer on fire"}, trigger="webhook")
            now = time.time()
            flow.store.log_delivery(
                Delivery("triage", "webhook", "webhook", "accepted", key="msg_1", run_id=run.id, at=now - 1)
            )
            flow.store.log_delivery(
                Delivery("triage", "webhook", "webhook", "refused", key="msg_2", detail="403: bad signature", at=now)
            )
            flow.store.flush_sync()
        page.goto(f"{url}/?tab=workflows&workflow=triage")
        rows = triggers.locator("table.workflow-deliveries tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("refused")
        expect(rows.nth(0)).to_contain_text("403: bad signature")
        expect(rows.nth(1)).to_contain_text("accepted")
        expect(rows.nth(1).locator("a.run-link")).to_have_attribute("href", f"/?tab=runs&run={run.id}")
        expect(section).to_contain_text("v1 is deployed")
        expect(result).to_have_text("")
        assert secret.secret not in page.content()
        shot(page, "51-deployment-section")
        if os.environ.get("AGENTFLOW_UPDATE_SCREENSHOTS"):  # refresh the docs' pictures on request only
            page.screenshot(path=str(SCREENSHOTS / "deployment.png"), full_page=True)

        # Undeploy: nothing fires it any more, and the history says who did it.
        page.locator("#undeploy-button").click()
        expect(result).to_contain_text("Undeployed 'triage'")
        expect(section).to_contain_text("Not deployed")
        expect(triggers.locator("table.workflow-triggers")).to_have_count(0)
        expect(triggers.locator("ul.deployment-history li").first).to_contain_text("undeploy by web:local")

        # The Settings tab: how to connect each channel, who is served; never a token.
        page.get_by_role("tab", name="Settings").click()
        channels = page.locator("#settings-channels")
        expect(channels).to_contain_text("Telegram — not configured")
        expect(channels).to_contain_text(f"webhook: Telegram delivers to {PUBLIC_URL}/channels/telegram")
        expect(channels).to_contain_text("Allow-list (user ids or @usernames): 123456789, @ada")
        expect(channels).to_contain_text("WhatsApp (Twilio) — not configured")
        expect(channels).to_contain_text("Allow-list (numbers): nobody")
        expect(channels).to_contain_text(f"incoming-message webhook (HTTP POST): {PUBLIC_URL}/channels/whatsapp")
        expect(channels).to_contain_text("AGENTFLOW_TRUST_PROXY is off")
        channels.scroll_into_view_if_needed()
        shot(page, "52-settings-channels")
        if os.environ.get("AGENTFLOW_UPDATE_SCREENSHOTS"):
            page.screenshot(path=str(SCREENSHOTS / "settings-channels.png"))
        page.close()
    context.close()


def test_the_channels_section_says_what_is_set_and_never_a_token() -> None:
    unset = channels_text(Settings())
    assert "**Telegram** — not configured" in unset
    assert "long polling: this server asks Telegram for messages" in unset
    assert "**nobody** (set AGENTFLOW_TELEGRAM_ALLOW to serve someone)" in unset
    assert "AGENTFLOW_PUBLIC_URL + `/channels/whatsapp` (set AGENTFLOW_PUBLIC_URL" in unset
    for variable in (
        "AGENTFLOW_TELEGRAM_TOKEN",
        "AGENTFLOW_TELEGRAM_ALLOW",
        "AGENTFLOW_PUBLIC_URL",
        "AGENTFLOW_TWILIO_ACCOUNT_SID",
        "AGENTFLOW_TWILIO_AUTH_TOKEN",
        "AGENTFLOW_WHATSAPP_FROM",
        "AGENTFLOW_WHATSAPP_ALLOW",
        "AGENTFLOW_TRUST_PROXY",
    ):
        assert variable in unset, variable

    tokens = ("123456:telegram-token-value", "AC-account-sid-value", "twilio-auth-token-value", "tg-secret-value")
    configured = channels_text(
        Settings(
            telegram_token=tokens[0],
            telegram_secret=tokens[3],
            twilio_account_sid=tokens[1],
            twilio_auth_token=tokens[2],
            whatsapp_from="whatsapp:+14155238886",
            whatsapp_allow=("+33612345678",),
            trust_proxy=True,
        )
    )
    assert "**Telegram** — ✓ configured (AGENTFLOW_TELEGRAM_TOKEN is set)" in configured
    assert "**WhatsApp (Twilio)** — ✓ configured (sender `whatsapp:+14155238886`" in configured
    assert "Allow-list (numbers): `+33612345678`" in configured
    assert "AGENTFLOW_TRUST_PROXY is on" in configured
    assert not [token for token in tokens if token in configured]

    half = channels_text(Settings(twilio_account_sid=tokens[1]))
    assert "not configured (AGENTFLOW_TWILIO_AUTH_TOKEN missing)" in half and tokens[1] not in half
    no_sender = channels_text(Settings(twilio_account_sid=tokens[1], twilio_auth_token=tokens[2]))
    assert "configured without a sender: set AGENTFLOW_WHATSAPP_FROM" in no_sender
