"""The Telegram channel: python-telegram-bot against the fake Bot API, a real router, store and fake model."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from agentflow.channels.router import ChannelRouter
from agentflow.channels.telegram import (
    SECRET_HEADER,
    WEBHOOK_PATH,
    TelegramChannel,
    TelegramStartError,
    webhook_secret,
)
from agentflow.chat.engine import ConversationEngine
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings, SettingsError
from tests.fakes.media import ALLOWED_USER, STRANGER
from tests.fakes.openai_server import FakeLLM, Text
from tests.fakes.telegram import TOKEN, FakeTelegram, RecordingRouter, TelegramMedium, telegram_medium
from tests.integration.helpers import PERSON, workflow

TRIAGE = workflow(
    "triage",
    """
    triggers:
      - telegram: {command: /triage, input: ticket}
    inputs: {ticket: string}
    nodes:
      label: {type: transform, expr: "join('', ['triaged: ', inputs.ticket])"}
    outputs: {result: "{{ label }}"}
    """,
)
SUMMARIZE = workflow(
    "summarize",
    """
    triggers:
      - telegram: {command: /summarize}
    inputs: {text: string}
    nodes:
      short: {type: transform, expr: "join('', ['summary of ', inputs.text])"}
    outputs: {summary: "{{ short }}"}
    """,
)
SHIP = workflow(
    "ship",
    """
    triggers:
      - telegram: {command: /ship}
    inputs: {parcel: string}
    nodes:
      ask: {type: approval, message: "Send {{ inputs.parcel }}?"}
      done: {type: transform, needs: [ask], expr: "join('', ['shipped ', inputs.parcel])"}
    outputs: {result: "{{ done }}"}
    """,
)


def deploy(flow: AgentFlow, *sources: str) -> None:
    """Save, grant (the telegram channel is a capability a person grants) and deploy each workflow."""
    for source in sources:
        stored = flow.save_workflow(source)
        flow.grant_version(stored, by=PERSON)
        flow.deployments.deploy(stored.name, by=PERSON)


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def medium(running: AgentFlow, telegram: FakeTelegram) -> AsyncIterator[TelegramMedium]:
    async with telegram_medium(running, ConversationEngine(running, run_wait=20), fake=telegram) as medium:
        yield medium


def settings_for(flow: AgentFlow, telegram: FakeTelegram, **changes: Any) -> Settings:
    base = replace(
        flow.settings, telegram_token=telegram.token, telegram_api=telegram.base_url, telegram_allow=(ALLOWED_USER,)
    )
    return replace(base, **changes)


# -- long polling, the assistant, the allow-list --------------------------------------


async def test_an_allowed_person_talks_to_the_assistant(
    medium: TelegramMedium, telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.enqueue(Text("Hello! Tell me what to automate."))
    await medium.say("hi there")
    assert await medium.received(1) == ["Hello! Tell me what to automate."]
    assert telegram.sent[0].chat_id == int(ALLOWED_USER)
    assert "parse_mode" not in telegram.sent[0].params  # plain text: nobody's words break Telegram's markup
    assert fake_llm.requests[0]["messages"][-1]["content"] == "hi there"
    # Long polling, after removing any webhook, for the two kinds of update the bot handles.
    assert telegram.calls("deleteWebhook")
    assert telegram.calls("getUpdates")[0]["allowed_updates"] == ["message", "callback_query"]
    assert telegram.webhook is None


async def test_strangers_are_ignored_and_nothing_runs(
    medium: TelegramMedium, telegram: FakeTelegram, fake_llm: FakeLLM, running: AgentFlow
) -> None:
    deploy(running, TRIAGE)
    await medium.say("hello", user=STRANGER)
    assert await medium.router.outcome(str(medium.last_update)) == "ignored"
    await medium.say("/triage let me in", user=STRANGER)
    assert await medium.router.outcome(str(medium.last_update)) == "ignored"
    assert telegram.sent == [] and fake_llm.count() == 0
    assert running.store.list_runs(workflow="triage") == []


async def test_nobody_is_served_by_default(running: AgentFlow, telegram: FakeTelegram, fake_llm: FakeLLM) -> None:
    async with telegram_medium(running, ConversationEngine(running), fake=telegram, allow=()) as medium:
        await medium.say("hello")
        assert await medium.router.outcome(str(medium.last_update)) == "ignored"
        assert not medium.channel.allowed(ALLOWED_USER)
    assert telegram.sent == [] and fake_llm.count() == 0


async def test_allow_list_entries_by_id_by_current_username_or_anyone(
    running: AgentFlow, telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.default = Text("served")
    engine = ConversationEngine(running)
    async with telegram_medium(running, engine, fake=telegram, allow=("@Alice", "1001")) as medium:

        async def outcome(user: int, username: str | None) -> str:
            update_id = telegram.push_message(user, "hi", username=username)
            return await medium.router.outcome(str(update_id))

        assert await outcome(1001, None) == "assistant"  # by id
        assert await outcome(4004, "alice") == "assistant"  # @names match whatever the case
        assert medium.channel.allowed("4004")
        assert await outcome(4004, "mallory") == "ignored"  # the name changed hands: the entry no longer matches
        assert not medium.channel.allowed("4004")
        assert await outcome(5005, None) == "ignored"
    async with telegram_medium(running, engine, fake=telegram, allow=("*",)) as medium:
        update_id = telegram.push_message(5005, "hi")
        assert await medium.router.outcome(str(update_id)) == "assistant"


# -- one bot, many workflows --------------------------------------------------------------


async def test_one_bot_serves_many_workflows_and_the_assistant(
    medium: TelegramMedium, telegram: FakeTelegram, fake_llm: FakeLLM, running: AgentFlow
) -> None:
    deploy(running, TRIAGE, SUMMARIZE)
    await medium.say("/triage printer on fire")
    first = await medium.received(2)  # "started", and the result (in either order: the run may be quick)
    assert any(text.startswith("Started triage v1 (run ") for text in first)
    assert any(text.startswith("✅ triage (run ") and text.endswith("\n\ntriaged: printer on fire") for text in first)
    await medium.say("/summarize a long story")
    second = (await medium.received(4))[2:]
    assert any(text.endswith("\n\nsummary of a long story") for text in second)
    fake_llm.enqueue(Text("I can build workflows with you."))
    await medium.say("what can you do?")
    assert (await medium.received(5))[4] == "I can build workflows with you."
    assert fake_llm.count() == 1  # the commands never reached the model
    [triage] = running.store.list_runs(workflow="triage")
    assert triage.inputs == {"ticket": "printer on fire"} and triage.trigger == "telegram"
    assert triage.reply_to == {"channel": "telegram", "chat": ALLOWED_USER, "user": ALLOWED_USER}
    [summary] = running.store.list_runs(workflow="summarize")
    assert summary.inputs == {"text": "a long story"}
    # In a group, the command may name the bot; the result goes to the group.
    telegram.push_message(int(ALLOWED_USER), "/triage@agentflow_test_bot group ticket", chat_id=-100500)
    in_group = await asyncio.to_thread(telegram.wait_sent, 2, chat_id=-100500)
    assert any(message.text.endswith("\n\ntriaged: group ticket") for message in in_group)


# -- approvals as buttons ------------------------------------------------------------------


async def test_an_approval_button_decides_once_and_the_result_arrives(
    medium: TelegramMedium, telegram: FakeTelegram, running: AgentFlow
) -> None:
    deploy(running, SHIP)
    await medium.say("/ship parcel 7")
    [approval_id] = await medium.offered()
    [prompt] = [message for message in telegram.sent if message.approvals]
    assert prompt.text.startswith("Approval needed — workflow ship, step ask:\n\nSend parcel 7?")
    assert f"approve {approval_id}" in prompt.text  # the typed way, for a reason with the rejection
    assert [label for label, _ in prompt.buttons] == ["✅ Approve", "⛔ Reject"]

    refused = await medium.press(approval_id, approve=True, user=STRANGER)
    assert refused.text is not None and "allow-list" in refused.text
    approval = running.store.approval(approval_id)
    assert approval is not None and approval.status == "pending"
    assert telegram.edited_markups == []

    # A double tap: both presses carry the buttons, and they are handled concurrently.
    presses = [telegram.push_callback(int(ALLOWED_USER), f"a:{approval_id}:y", prompt.message_id) for _ in range(2)]
    answers = sorted([(await asyncio.to_thread(telegram.wait_answered, press)).text or "" for press in presses])
    assert answers[0].startswith(f"Approval #{approval_id} was already decided: approved by telegram:1001")
    assert answers[1].startswith(f"Approved #{approval_id}")
    result = await asyncio.to_thread(
        telegram.wait, lambda fake: [m for m in fake.sent_to(ALLOWED_USER) if m.text.startswith("✅ ship")]
    )
    assert result[0].text.endswith("\n\nshipped parcel 7")
    assert telegram.edited_markups == [(int(ALLOWED_USER), prompt.message_id, None)]  # the buttons are gone
    now = telegram.current(prompt.message_id)
    assert "reply_markup" not in now and now["text"] == prompt.text + "\n\n✅ Approved by telegram:1001."

    again = await medium.decide(approval_id, approve=False)  # later, on the message as it is now
    assert "already decided: approved by telegram:1001" in again
    decided = running.store.approval(approval_id)
    assert decided is not None and decided.status == "approved" and decided.decided_by == "telegram:1001"
    assert len(telegram.edited_markups) == 1 and len(telegram.edited_texts) == 1
    assert len(telegram.answered_callbacks) == 4  # every press is answered


async def test_a_reject_button_rejects_the_run_and_names_who(
    medium: TelegramMedium, telegram: FakeTelegram, running: AgentFlow
) -> None:
    deploy(running, SHIP)
    await medium.say("/ship the wrong parcel")
    [approval_id] = await medium.offered()
    [prompt] = [message for message in telegram.sent if message.approvals]
    query_id = telegram.push_callback(int(ALLOWED_USER), f"a:{approval_id}:n", prompt.message_id, username="alice")
    answer = await asyncio.to_thread(telegram.wait_answered, query_id)
    assert answer.text is not None and answer.text.startswith(f"Rejected #{approval_id}")
    rejected = await asyncio.to_thread(
        telegram.wait, lambda fake: [m for m in fake.sent_to(ALLOWED_USER) if m.text.startswith("⛔ ship")] or None
    )
    assert "was rejected" in rejected[0].text
    await telegram.until(lambda fake: fake.edited_texts, what="the decision shown on the prompt")
    assert telegram.current(prompt.message_id)["text"].endswith("\n\n⛔ Rejected by @alice.")


async def test_a_button_that_is_not_an_approval_is_answered_and_decides_nothing(
    medium: TelegramMedium, telegram: FakeTelegram
) -> None:
    await medium.channel.send(ALLOWED_USER, "an old message")
    [message] = await asyncio.to_thread(telegram.wait_sent, 1)
    for data in ("not-ours", "a:12:maybe"):
        query_id = telegram.push_callback(int(ALLOWED_USER), data, message.message_id)
        answer = await asyncio.to_thread(telegram.wait_answered, query_id)
        assert answer.text == "This button is not one of AgentFlow's approvals (an old message?)."
    query_id = telegram.push_callback(int(ALLOWED_USER), "a:999:y", message.message_id)
    assert (await asyncio.to_thread(telegram.wait_answered, query_id)).text == "There is no approval #999."
    assert telegram.edited_markups == [] and telegram.edited_texts == []


# -- what Telegram accepts -------------------------------------------------------------------


async def test_a_long_reply_is_split_into_messages_telegram_takes(
    medium: TelegramMedium, telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    words = [f"word{number}" for number in range(2000)]  # about 17,000 characters
    fake_llm.enqueue(Text(" ".join(words)))
    await medium.say("tell me everything")
    await medium.router.outcome(str(medium.last_update))
    parts = medium.received_now()
    assert len(parts) >= 4 and all(len(part) <= 4096 for part in parts)
    assert " ".join(parts).split() == words  # nothing lost, nothing cut inside a word
    # Telegram counts UTF-16 units: 3,000 emoji are 6,000 of them, so they go in two messages.
    fake_llm.enqueue(Text("😀" * 3000))
    await medium.say("and in emoji?")
    await medium.router.outcome(str(medium.last_update))
    emoji = medium.received_now()[len(parts) :]
    assert len(emoji) == 2 and "".join(emoji) == "😀" * 3000
    assert all(len(part.encode("utf-16-le")) // 2 <= 4096 for part in emoji)


async def test_a_photo_gets_an_answer_saying_what_is_read(medium: TelegramMedium, telegram: FakeTelegram) -> None:
    photo = [{"file_id": "photo-1", "file_unique_id": "u-1", "width": 90, "height": 90}]
    telegram.push_raw({"message": telegram.message(int(STRANGER), photo=photo)})
    telegram.push_raw({"message": telegram.message(int(ALLOWED_USER), photo=photo)})
    [answer] = await medium.received(1)
    assert answer.startswith("Only text is read here")
    assert telegram.sent_to(STRANGER) == []


async def test_a_duplicate_update_is_handled_once(
    medium: TelegramMedium, telegram: FakeTelegram, fake_llm: FakeLLM, running: AgentFlow
) -> None:
    fake_llm.enqueue(Text("said once"))
    await medium.say("hello")
    assert await medium.received(1) == ["said once"]
    await medium.say_again()
    key = str(medium.last_update)
    assert await medium.router.outcome(key, nth=2) == "duplicate"
    assert fake_llm.count() == 1 and len(telegram.sent) == 1

    deploy(running, TRIAGE)
    await medium.say("/triage only once")
    await medium.received(3)
    await medium.say_again()
    assert await medium.router.outcome(str(medium.last_update), nth=2) == "duplicate"
    assert len(running.store.list_runs(workflow="triage")) == 1


async def test_telegram_refusing_a_message_is_logged_and_the_receiver_goes_on(
    running: AgentFlow, telegram: FakeTelegram, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm.default = Text("a reply")
    async with telegram_medium(running, ConversationEngine(running), fake=telegram, allow=("1001", "3003")) as medium:
        telegram.block(1001)
        telegram.chat_gone(-42)
        with caplog.at_level(logging.WARNING, logger="agentflow.channels"):
            await medium.say("hello")
            assert await medium.router.outcome(str(medium.last_update)) == "assistant"
            await medium.channel.send("-42", "to a chat that is not there")  # logged, not raised
        logged = [record.getMessage().lower() for record in caplog.records]
        assert any("bot was blocked by the user" in line and "blocked the bot" in line for line in logged)
        assert any("chat not found" in line for line in logged)
        update_id = telegram.push_message(3003, "still there?")
        assert await medium.router.outcome(str(update_id)) == "assistant"
        assert [message.text for message in telegram.sent] == ["a reply"]


# PTB 22's RetryAfter reads its own deprecated int `retry_after` while it is made.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_flood_control_is_waited_out_once(medium: TelegramMedium, telegram: FakeTelegram) -> None:
    telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    await medium.channel.send(ALLOWED_USER, "after a pause")
    assert [message.text for message in telegram.sent] == ["after a pause"]
    assert len(telegram.calls("sendMessage")) == 2


async def test_the_bot_token_stays_out_of_the_logs(
    medium: TelegramMedium, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        fake_llm.enqueue(Text("hi"))
        await medium.say("hello")
        await medium.received(1)
    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert any("/bot<token>/" in line for line in lines)
    assert not any(TOKEN in line for line in lines)


# -- webhook mode ------------------------------------------------------------------------------


async def test_webhook_mode_sets_the_webhook_and_checks_the_secret_of_each_delivery(
    running: AgentFlow, telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    settings = settings_for(running, telegram, public_url="https://flows.example.com")
    secret = webhook_secret(settings)
    channel = TelegramChannel(settings)
    app = FastAPI()
    channel.install(app)
    update = {"update_id": 900_001, "message": telegram.message(int(ALLOWED_USER), "hello")}
    fake_llm.enqueue(Text("by webhook"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:

        async def deliver(body: Any, headers: dict[str, str]) -> httpx.Response:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return await client.post(WEBHOOK_PATH, content=content, headers=headers)

        assert (await deliver(update, {SECRET_HEADER: secret})).status_code == 503  # not started yet
        router = RecordingRouter(running, ConversationEngine(running))
        await channel.start(router)
        try:
            assert telegram.webhook == {
                "url": "https://flows.example.com/channels/telegram",
                "secret_token": secret,
                "allowed_updates": ["message", "callback_query"],
                "max_connections": None,
            }
            assert telegram.calls("getUpdates") == []  # Telegram delivers: no polling
            missing = await deliver(update, {})
            wrong = await deliver(update, {SECRET_HEADER: secret[:-1] + ("0" if secret[-1] != "0" else "1")})
            assert (missing.status_code, wrong.status_code) == (403, 403)
            assert SECRET_HEADER in missing.json()["detail"]
            assert (await deliver(update, {SECRET_HEADER: secret})).json() == {"ok": True}
            assert await router.outcome("900001") == "assistant"
            assert [m.text for m in await asyncio.to_thread(telegram.wait_sent, 1)] == ["by webhook"]
            # Telegram redelivers after a timeout: the same update is handled once.
            assert (await deliver(update, {SECRET_HEADER: secret})).status_code == 200
            assert await router.outcome("900001", nth=2) == "duplicate"
            assert fake_llm.count() == 1
            # The size cap comes before parsing; what is not an update is refused, saying so.
            huge = b'{"update_id": 1, "pad": "' + b"x" * settings.hook_max_bytes + b'"}'
            assert (await deliver(huge, {SECRET_HEADER: secret})).status_code == 413
            for body in (b"not json", b"[1, 2]", b'{"message": {}}', b'{"update_id": 5, "message": "text"}'):
                refused = await deliver(body, {SECRET_HEADER: secret})
                assert refused.status_code == 400 and "not a Telegram update" in refused.json()["detail"]
        finally:
            await channel.stop()
    assert [message.key for message in router.seen] == ["900001", "900001"]


async def test_a_polling_server_refuses_webhook_deliveries(medium: TelegramMedium, telegram: FakeTelegram) -> None:
    app = FastAPI()
    medium.channel.install(app)
    secret = webhook_secret(medium.channel.settings)
    update = {"update_id": 900_002, "message": telegram.message(int(ALLOWED_USER), "hello")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        answer = await client.post(WEBHOOK_PATH, json=update, headers={SECRET_HEADER: secret})
    assert answer.status_code == 503 and "AGENTFLOW_PUBLIC_URL" in answer.json()["detail"]
    assert medium.router.seen == []


# -- configuration mistakes ----------------------------------------------------------------------


def test_settings_the_channel_cannot_use_are_refused_saying_what_to_do(flow: AgentFlow) -> None:
    with pytest.raises(SettingsError, match="AGENTFLOW_TELEGRAM_TOKEN is not set; create a bot with @BotFather"):
        TelegramChannel(replace(flow.settings, telegram_token=None))
    with pytest.raises(SettingsError, match="does not look like a bot token") as malformed:
        TelegramChannel(replace(flow.settings, telegram_token="my secret bot"))
    assert "my secret bot" not in str(malformed.value)
    with pytest.raises(SettingsError, match="AGENTFLOW_TELEGRAM_SECRET must be 1-256 characters"):
        TelegramChannel(replace(flow.settings, telegram_token=TOKEN, telegram_secret="with spaces!"))
    derived = webhook_secret(replace(flow.settings, telegram_token=TOKEN))
    assert len(derived) == 32 and derived.isalnum() and TOKEN not in derived
    assert webhook_secret(replace(flow.settings, telegram_token=TOKEN, telegram_secret="mine_1")) == "mine_1"


async def test_a_token_telegram_rejects_stops_start_with_what_to_do(flow: AgentFlow, telegram: FakeTelegram) -> None:
    wrong = "7000001:AAF-not-the-right-token"
    channel = TelegramChannel(settings_for(flow, telegram, telegram_token=wrong))
    with pytest.raises(TelegramStartError, match="rejected AGENTFLOW_TELEGRAM_TOKEN") as error:
        await channel.start(ChannelRouter(flow))
    assert wrong not in str(error.value)
    with pytest.raises(RuntimeError, match="not started"):
        await channel.send(ALLOWED_USER, "hello")


async def test_a_webhook_telegram_refuses_stops_start_with_what_to_do(flow: AgentFlow, telegram: FakeTelegram) -> None:
    channel = TelegramChannel(settings_for(flow, telegram, public_url="http://flows.example.com"))
    with pytest.raises(TelegramStartError, match="needs an https AGENTFLOW_PUBLIC_URL"):
        await channel.start(ChannelRouter(flow))
    assert telegram.webhook is None
