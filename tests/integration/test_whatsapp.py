"""WhatsApp through Twilio: signed webhooks in (SECURITY.md's Twilio rows), the REST Messages API out.

The real `twilio` client talks to the fake Messages API (`tests/fakes/twilio.py`); the webhook is
served by a bare FastAPI app with the channel's route, in the test's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from agentflow.channels.base import ApprovalPrompt, split_text
from agentflow.channels.whatsapp import EMPTY_TWIML, MEDIA_ONLY, PATH, WhatsAppChannel, number
from agentflow.chat.engine import ConversationEngine
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings, SettingsError
from tests.fakes.media import ALLOWED_USER, STRANGER
from tests.fakes.openai_server import FakeLLM, Text
from tests.fakes.twilio import ACCOUNT_SID, APP_URL, AUTH_TOKEN, SENDER, FakeTwilio, address, whatsapp_medium
from tests.integration.helpers import prompts, run_source, workflow

OTHER = "3003"
"""A second allow-listed person, where one is needed."""
PUBLIC = "https://public.example.com"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


class Logged(logging.Handler):
    """Set when the channels' logger says something containing all of `words`."""

    def __init__(self, *words: str) -> None:
        super().__init__(logging.INFO)
        self.words = words
        self.records: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if all(word in message for word in self.words):
            self.records.append(message)
            self.seen.set()


@contextmanager
def watching(*words: str) -> Iterator[Logged]:
    handler = Logged(*words)
    logger = logging.getLogger("agentflow.channels")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def logged(handler: Logged) -> str:
    assert await asyncio.to_thread(handler.seen.wait, 20), f"nothing logged with {handler.words}"
    return handler.records[0]


def settings(twilio: FakeTwilio, **overrides: object) -> Settings:
    options: dict[str, object] = {
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": twilio.auth_token,
        "whatsapp_from": SENDER,
        "whatsapp_allow": ("+10015550100",),
        "twilio_api": twilio.url,
        **overrides,
    }
    return Settings(**options)  # type: ignore[arg-type]


# -- signatures (SECURITY.md: missing or wrong X-Twilio-Signature -> 403; valid behind a TLS proxy -> 200) --


async def test_a_webhook_without_a_signature_is_refused(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    async with whatsapp_medium(flow, ConversationEngine(flow)) as medium:
        with watching("no X-Twilio-Signature") as refusal:
            response = await medium.post(medium.form("hello"), signed_for=None)
        assert response.status_code == 403 and "missing X-Twilio-Signature" in response.text
        assert "no X-Twilio-Signature header" in await logged(refusal)
    assert fake_llm.requests == [] and medium.fake.sent == []


async def test_a_webhook_with_one_parameter_changed_is_refused(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    async with whatsapp_medium(flow, ConversationEngine(flow)) as medium:
        form = medium.form("hello")
        signature = medium.fake.sign(APP_URL + PATH, form)
        with watching("does not match") as refusal:
            response = await medium.post({**form, "Body": "hello!"}, signature=signature)
        assert response.status_code == 403
        assert "AGENTFLOW_TWILIO_AUTH_TOKEN" in await logged(refusal)
        other = "E" if signature[-2] == "A" else "A"  # another last character: another HMAC
        forged = await medium.post(form, signature=signature[:-2] + other + "=")
        assert forged.status_code == 403
        signed_elsewhere = await medium.post(form, signed_for="http://127.0.0.1:7860/channels/whatsapp?x=1")
        assert signed_elsewhere.status_code == 403
    assert fake_llm.requests == [] and medium.fake.sent == []


async def test_a_signature_for_the_public_url_is_valid_behind_a_tls_proxy(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("Hello from behind the proxy."))
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example.com", "X-Forwarded-For": "1.2.3.4"}
    async with whatsapp_medium(flow, ConversationEngine(flow), trust_proxy=True) as medium:
        # The request reaches us as http://127.0.0.1:7860/...; Twilio signed the URL it called.
        response = await medium.post(medium.form("hi"), signed_for=PUBLIC + PATH, headers=proxied)
        assert response.status_code == 200
        assert response.text == EMPTY_TWIML and response.headers["content-type"].startswith("text/xml")
        assert await medium.received(1) == ["Hello from behind the proxy."]
        on_a_port = {**proxied, "X-Forwarded-Port": "8443"}
        signed_with_port = await medium.post(medium.form("hi"), signed_for=PUBLIC + ":8443" + PATH, headers=on_a_port)
        assert signed_with_port.status_code == 200


async def test_forwarded_headers_count_only_when_the_proxy_is_trusted(flow: AgentFlow, twilio: FakeTwilio) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example.com"}
    async with whatsapp_medium(flow, None, fake=twilio) as medium:
        spoofed = await medium.post(medium.form("hi"), signed_for=PUBLIC + PATH, headers=proxied)
        assert spoofed.status_code == 403
    async with whatsapp_medium(flow, None, fake=twilio, public_url="https://flows.example.com") as medium:
        configured = await medium.post(medium.form("hi"), signed_for="https://flows.example.com" + PATH)
        assert configured.status_code == 200
        assert (await medium.post(medium.form("hi"), signed_for=PUBLIC + PATH, headers=proxied)).status_code == 403


# -- who is served ------------------------------------------------------------------------------------


async def test_a_number_not_on_the_allow_list_is_ignored(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    async with whatsapp_medium(flow, ConversationEngine(flow)) as medium:
        with watching("not on the allow-list", number(address(STRANGER))) as ignored:
            response = await medium.post(medium.form("run everything", user=STRANGER))
            assert response.status_code == 200  # Twilio delivered it: nothing to retry
            assert "AGENTFLOW_WHATSAPP_ALLOW" in await logged(ignored)
    assert fake_llm.requests == [] and medium.fake.sent == []


def test_numbers_are_compared_in_international_form(twilio: FakeTwilio) -> None:
    channel = WhatsAppChannel(settings(twilio, whatsapp_allow=("+1 001 555-0100", "0033612345678")))
    assert channel.allowed("+10015550100") and channel.allowed("whatsapp:+10015550100")
    assert channel.allowed("+33612345678") and not channel.allowed("+33612345679")
    assert not WhatsAppChannel(settings(twilio, whatsapp_allow=())).allowed("+10015550100")  # default: nobody
    assert WhatsAppChannel(settings(twilio, whatsapp_allow=("*",))).allowed("+4915112345678")


def test_settings_it_cannot_use_say_which_variable_to_fix(twilio: FakeTwilio) -> None:
    with pytest.raises(SettingsError, match="AGENTFLOW_WHATSAPP_FROM is not set"):
        WhatsAppChannel(settings(twilio, whatsapp_from=None))
    with pytest.raises(SettingsError, match="AGENTFLOW_WHATSAPP_FROM='whatsapp:me' is not a WhatsApp address"):
        WhatsAppChannel(settings(twilio, whatsapp_from="whatsapp:me"))
    with pytest.raises(SettingsError, match="AGENTFLOW_WHATSAPP_ALLOW has 'alice', which is not a phone number"):
        WhatsAppChannel(settings(twilio, whatsapp_allow=("+10015550100", "alice")))
    with pytest.raises(SettingsError, match="AGENTFLOW_TWILIO_AUTH_TOKEN"):
        WhatsAppChannel(settings(twilio, twilio_auth_token=None))
    assert WhatsAppChannel(settings(twilio, whatsapp_from="+14155238886")).sender == SENDER


# -- what comes back ----------------------------------------------------------------------------------


async def test_a_long_reply_is_split_at_1600_characters(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    reply = " ".join(f"line{index}" for index in range(1200))  # 9,689 characters
    fake_llm.enqueue(Text(reply))
    async with whatsapp_medium(flow, ConversationEngine(flow)) as medium:
        await medium.say("tell me everything")
        parts = await medium.received(len(split_text(reply, 1600)))
    assert len(parts) == 7 and all(len(part) <= 1600 for part in parts)
    assert " ".join(parts).split() == reply.split()
    assert medium.fake.refused == []  # Twilio's own limit (error 21617) was never hit


async def test_outside_the_24_hour_window_the_error_says_what_to_do(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda body: Text("echo: " + body["messages"][-1]["content"])
    allow = (number(address(ALLOWED_USER)), number(address(OTHER)))
    async with whatsapp_medium(flow, ConversationEngine(flow), whatsapp_allow=allow) as medium:
        medium.fake.close_window(medium.chat)
        with watching("63016") as window:
            await medium.say("are you there?")
            message = await logged(window)
        assert "The person must write first, or use an approved template (ContentSid)" in message
        assert medium.fake.refused == [(63016, medium.chat)]
        await medium.say("and me?", user=OTHER)  # the channel carries on for everyone else
        assert await medium.received(1, user=OTHER) == ["echo: and me?"]


async def test_other_twilio_errors_are_logged_with_their_code(flow: AgentFlow, twilio: FakeTwilio) -> None:
    channel = WhatsAppChannel(settings(twilio, twilio_auth_token="not-the-token"))
    with watching("Twilio error 20003") as refused:
        await channel.send("whatsapp:+10015550100", "hello")
    assert "https://www.twilio.com/docs/api/errors/20003" in await logged(refused)
    assert twilio.sent == []


async def test_every_request_goes_to_the_configured_api(
    twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch, flow: AgentFlow
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "dublin")  # would send requests to api.dublin.ie1.twilio.com
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    await WhatsAppChannel(settings(twilio)).send("whatsapp:+10015550100", "hello")
    assert [(sent.from_, sent.to, sent.body) for sent in twilio.sent] == [(SENDER, "whatsapp:+10015550100", "hello")]


async def test_messages_of_one_chat_are_answered_in_order(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("first answer", latency=0.5))  # a slow turn must not be overtaken
    fake_llm.enqueue(Text("second answer"))
    async with whatsapp_medium(flow, ConversationEngine(flow)) as medium:
        await medium.say("first")
        await medium.say("second")
        assert await medium.received(2) == ["first answer", "second answer"]
    assert prompts(fake_llm.requests) == ["first", "second"]


async def test_a_picture_without_text_gets_a_hint(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    async with whatsapp_medium(flow, ConversationEngine(flow)) as medium:
        picture = medium.form(
            "", NumMedia="1", MediaUrl0="https://api.twilio.com/media/1", MediaContentType0="image/jpeg"
        )
        assert (await medium.post(picture)).status_code == 200
        assert await medium.received(1) == [MEDIA_ONLY]
    assert fake_llm.requests == []


async def test_an_sms_on_the_whatsapp_webhook_is_ignored(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    async with whatsapp_medium(flow, ConversationEngine(flow)) as medium:
        with watching("not a WhatsApp sender") as ignored:
            response = await medium.post({**medium.form("hello"), "From": "+10015550100"})
            assert response.status_code == 200
            await logged(ignored)
    assert fake_llm.requests == [] and medium.fake.sent == []


# -- approvals ----------------------------------------------------------------------------------------


async def approval_in_chat(flow: AgentFlow, medium: object, chat: str) -> int:
    run = await run_source(flow, workflow("pay", 'nodes:\n  ask: {type: approval, message: "Pay 10 EUR?"}'))
    pending = flow.store.pending_approval(run.id)
    assert pending is not None
    prompt = ApprovalPrompt(pending.id, run.id, run.workflow, pending.node_id, pending.message)
    await medium.router.ask(medium.channel, chat, prompt)  # type: ignore[attr-defined]
    return pending.id


async def test_a_typed_approve_decides_the_approval_once(running: AgentFlow) -> None:
    async with whatsapp_medium(running, None) as medium:
        approval_id = await approval_in_chat(running, medium, medium.chat)
        [offer] = await medium.received(1)
        assert "Pay 10 EUR?" in offer and f"Reply *approve {approval_id}* or *reject {approval_id} [why]*" in offer
        assert f"Approved #{approval_id}" in await medium.decide(approval_id, approve=True)
        again = await medium.decide(approval_id, approve=True)
        assert again == f"Approval #{approval_id} was already decided: approved by whatsapp:+10015550100."
    decided = running.store.approval(approval_id)
    assert decided is not None and decided.status == "approved" and decided.decided_by == "whatsapp:+10015550100"


async def test_a_quick_reply_button_carries_its_decision(running: AgentFlow) -> None:
    async with whatsapp_medium(running, None) as medium:
        approval_id = await approval_in_chat(running, medium, medium.chat)
        await medium.received(1)
        pressed = medium.form("Approve", ButtonText="Approve", ButtonPayload=f"a:{approval_id}:n")
        assert (await medium.post(pressed)).status_code == 200
        [_, answer] = await medium.received(2)
    assert answer.startswith(f"Rejected #{approval_id}")
    decided = running.store.approval(approval_id)
    assert decided is not None and decided.status == "rejected"


async def test_a_strangers_approve_decides_nothing(running: AgentFlow) -> None:
    async with whatsapp_medium(running, None) as medium:
        approval_id = await approval_in_chat(running, medium, medium.chat)
        with watching("not on the allow-list") as ignored:
            await medium.say(f"approve {approval_id}", user=STRANGER)
            await logged(ignored)
    decided = running.store.approval(approval_id)
    assert decided is not None and decided.status == "pending"


# -- the webhook's own limits --------------------------------------------------------------------------


async def webhook_client(channel: WhatsAppChannel) -> AsyncClient:
    app = FastAPI()
    channel.install(app)
    return AsyncClient(transport=ASGITransport(app=app), base_url=APP_URL)


async def test_before_start_the_webhook_answers_503(twilio: FakeTwilio) -> None:
    channel = WhatsAppChannel(settings(twilio))
    async with await webhook_client(channel) as http:
        form = {"From": "whatsapp:+10015550100", "Body": "hi", "MessageSid": "SM1"}
        signature = twilio.sign(APP_URL + PATH, form)
        response = await http.post(PATH, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 503


async def test_a_body_over_the_cap_is_refused_before_it_is_read(flow: AgentFlow, twilio: FakeTwilio) -> None:
    async with whatsapp_medium(flow, None, fake=twilio, hook_max_bytes=2048) as medium:
        huge = medium.form("x" * 4096)
        assert (await medium.post(huge)).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(8):
                yield b"Body=" + b"x" * 512 + b"&"

        streamed = await medium.http.post(PATH, content=chunks(), headers={"X-Twilio-Signature": "x"})
        assert streamed.status_code == 413
    assert twilio.sent == []


async def test_a_json_body_is_refused_with_what_twilio_sends(flow: AgentFlow) -> None:
    async with whatsapp_medium(flow, None) as medium:
        response = await medium.http.post(PATH, json={"Body": "hi"}, headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 415 and "form-encoded" in response.text


def test_the_fake_refuses_a_wrong_account(twilio: FakeTwilio) -> None:
    from twilio.base.exceptions import TwilioRestException
    from twilio.rest import Client

    client = Client(ACCOUNT_SID, AUTH_TOKEN + "-wrong")
    client.api.base_url = twilio.url
    with pytest.raises(TwilioRestException) as refused:
        client.messages.create(to="whatsapp:+10015550100", from_=SENDER, body="hi")
    assert refused.value.status == 401 and refused.value.code == 20003
