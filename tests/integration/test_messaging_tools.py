"""send_email against a real SMTP server (aiosmtpd) and post_message against fake Slack and Discord webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.runtime import AgentFlow
from agentflow.tools.registry import ToolContext, ToolError, builtin_registry
from agentflow.trust.egress import EgressDenied, EgressPolicy
from tests.fakes.chat_webhooks import DISCORD_TOKEN, SLACK_TOKEN, FakeChatWebhooks
from tests.fakes.smtp import FakeSMTP, ServerCertificates, make_certificates
from tests.integration.helpers import run_source, workflow

pytestmark = pytest.mark.store_agnostic

TOOLS = builtin_registry(operator=False)
LOOPBACK = EgressPolicy(hosts=frozenset({"127.0.0.1", "localhost"}), allow_internal=("127.0.0.1",))
PASSWORD = "pa:ss/w0rd-Secret"


def context(secrets: dict[str, str], egress: EgressPolicy | None = LOOPBACK) -> ToolContext:
    def secret(name: str) -> str:
        if name not in secrets:
            raise ToolError(f"secret {name} is not granted to this workflow; add it to spec.permissions.secrets")
        return secrets[name]

    return ToolContext(run_id="run-7", node_id="notify", egress=egress, secret=secret)


async def call(name: str, secrets: dict[str, str], egress: EgressPolicy | None = LOOPBACK, **arguments: Any) -> Any:
    return await TOOLS.get(name).call(arguments, context(secrets, egress))


def test_messaging_tools_name_their_secret_and_reach_the_network() -> None:
    assert TOOLS.get("send_email").secret_arguments == ("account",)
    assert TOOLS.get("post_message").secret_arguments == ("webhook",)
    for name in ("send_email", "post_message"):
        assert TOOLS.get(name).network is True and TOOLS.get(name).hosts == ()


# --- send_email ----------------------------------------------------------------------------------


@pytest.fixture
def certificates(tmp_path: Path) -> ServerCertificates:
    return make_certificates(tmp_path / "tls")


@pytest.fixture
def trusted(certificates: ServerCertificates, monkeypatch: pytest.MonkeyPatch) -> ServerCertificates:
    """The test CA is the one the SMTP client trusts (as an operator's SSL_CERT_FILE would make it)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    return certificates


@pytest.fixture
def plain_smtp() -> Iterator[FakeSMTP]:
    with FakeSMTP() as smtp:
        yield smtp


EMAIL = {"account": "SMTP_ACCOUNT", "to": ["Ann <ann@example.com>"], "subject": "Report", "text": "Sales are up."}


async def test_send_email_delivers_a_multipart_message(plain_smtp: FakeSMTP) -> None:
    secrets = {"SMTP_ACCOUNT": f"smtp://127.0.0.1:{plain_smtp.port}?from=reports@example.com&starttls=0"}
    arguments = {**EMAIL, "cc": ["bob@example.com"], "html": "<p>Sales are <b>up</b>.</p>"}
    result = await call("send_email", secrets, **arguments)
    assert result["sent"] is True and result["accepted"] == 2 and result["refused"] == []
    [received] = plain_smtp.received
    assert received.mail_from == "reports@example.com"
    assert received.rcpt_tos == ["ann@example.com", "bob@example.com"]
    message = received.message
    assert (message["From"], message["To"], message["Cc"], message["Subject"]) == (
        "reports@example.com",
        "Ann <ann@example.com>",
        "bob@example.com",
        "Report",
    )
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }
    assert parts["text/plain"].strip() == "Sales are up." and "<b>up</b>" in parts["text/html"]
    assert message["Message-ID"] == result["message_id"]
    again = await call("send_email", secrets, **arguments)  # a retried node repeats its Message-ID
    assert again["message_id"] == result["message_id"]


async def test_send_email_over_starttls_with_a_login(trusted: ServerCertificates) -> None:
    with FakeSMTP(mode="starttls", certificates=trusted, user="bot@example.com", password=PASSWORD) as smtp:
        url = f"smtp://bot%40example.com:{_quoted(PASSWORD)}@localhost:{smtp.port}?starttls=1"
        result = await call("send_email", {"SMTP_ACCOUNT": url}, **EMAIL)
        assert result["sent"] is True
        [received] = smtp.received
    assert (received.authenticated_as, received.tls, received.mail_from) == ("bot@example.com", True, "bot@example.com")


async def test_send_email_over_implicit_tls(trusted: ServerCertificates) -> None:
    with FakeSMTP(mode="smtps", certificates=trusted, user="bot", password=PASSWORD) as smtp:
        url = f"smtps://bot:{_quoted(PASSWORD)}@localhost:{smtp.port}?from=bot@example.com"
        await call("send_email", {"SMTP_ACCOUNT": url}, **EMAIL)
        [received] = smtp.received
    assert (received.authenticated_as, received.tls) == ("bot", True)


async def test_a_wrong_password_is_named_without_echoing_it(trusted: ServerCertificates) -> None:
    with FakeSMTP(mode="starttls", certificates=trusted, user="bot@example.com", password="the-right-one") as smtp:
        url = f"smtp://bot%40example.com:{_quoted(PASSWORD)}@localhost:{smtp.port}"
        with pytest.raises(ToolError) as caught:
            await call("send_email", {"SMTP_ACCOUNT": url}, **EMAIL)
        assert smtp.received == []
    message = str(caught.value)
    assert "refused the login of the account in secret SMTP_ACCOUNT (535); check the user and password" in message
    assert PASSWORD not in message and _quoted(PASSWORD) not in message


async def test_an_untrusted_certificate_is_refused(certificates: ServerCertificates) -> None:
    with FakeSMTP(mode="starttls", certificates=certificates, user="bot@example.com", password=PASSWORD) as smtp:
        url = f"smtp://bot%40example.com:{_quoted(PASSWORD)}@localhost:{smtp.port}"
        with pytest.raises(ToolError, match="TLS with the SMTP server localhost failed: CERTIFICATE_VERIFY_FAILED"):
            await call("send_email", {"SMTP_ACCOUNT": url}, **EMAIL)
        assert smtp.received == []


async def test_starttls_is_the_default_and_is_required(plain_smtp: FakeSMTP) -> None:
    url = f"smtp://127.0.0.1:{plain_smtp.port}?from=reports@example.com"
    with pytest.raises(ToolError, match=r"does not offer STARTTLS; use smtps:// .* or starttls=0"):
        await call("send_email", {"SMTP_ACCOUNT": url}, **EMAIL)
    assert plain_smtp.received == []


async def test_a_password_is_never_sent_in_clear() -> None:
    url = f"smtp://bot:{_quoted(PASSWORD)}@127.0.0.1:2525?from=bot@example.com&starttls=0"
    with pytest.raises(ToolError, match="would send its password unencrypted \\(starttls=0\\); use starttls=1"):
        await call("send_email", {"SMTP_ACCOUNT": url}, **EMAIL)


async def test_refused_recipients_are_reported() -> None:
    with FakeSMTP() as smtp:
        smtp.mailbox.refuse.add("gone@example.com")
        secrets = {"SMTP_ACCOUNT": f"smtp://127.0.0.1:{smtp.port}?from=reports@example.com&starttls=0"}
        some = await call("send_email", secrets, **{**EMAIL, "to": ["ann@example.com", "gone@example.com"]})
        assert (some["accepted"], some["refused"]) == (1, ["gone@example.com"])
        with pytest.raises(ToolError, match=r"the SMTP server refused every recipient: gone@example.com"):
            await call("send_email", secrets, **{**EMAIL, "to": ["gone@example.com"]})
        assert [received.rcpt_tos for received in smtp.received] == [["ann@example.com"]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": [f"r{index}@example.com" for index in range(21)]}, "21 recipients; send_email sends to at most 20"),
        ({"to": ["not-an-address"]}, "to: Value error, 'not-an-address' is not an email address"),
        ({"to": ["a@example.com\r\nBcc: all@example.com"]}, "is not an email address"),
        ({"to": []}, "to: List should have at least 1 item"),
        ({"subject": "Hi\r\nBcc: all@example.com"}, "subject: Value error, must be one line"),
        ({"account": "smtp://u:p@host"}, "account: String should match pattern"),
        ({"bcc": ["x@example.com"]}, "bcc: Extra inputs are not permitted"),
    ],
)
async def test_bad_email_arguments(plain_smtp: FakeSMTP, change: dict[str, Any], message: str) -> None:
    secrets = {"SMTP_ACCOUNT": f"smtp://127.0.0.1:{plain_smtp.port}?from=reports@example.com&starttls=0"}
    with pytest.raises(ToolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await call("send_email", secrets, **{**EMAIL, **change})
    assert plain_smtp.received == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://mail.example.com", "the secret SMTP_ACCOUNT is not an SMTP URL; write it as smtp://"),
        ("smtp://relay:2525?starttls=0", "names no sender address: add \\?from=you@example.com"),
        ("smtp://relay:99999?from=a@example.com", "has an invalid port"),
    ],
)
async def test_bad_account_urls(url: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        await call("send_email", {"SMTP_ACCOUNT": url}, **EMAIL)


async def test_send_email_needs_a_granted_secret() -> None:
    with pytest.raises(ToolError, match="secret SMTP_ACCOUNT is not granted to this workflow"):
        await call("send_email", {}, **EMAIL)


async def test_the_smtp_host_passes_the_egress_guard(plain_smtp: FakeSMTP) -> None:
    secrets = {"SMTP_ACCOUNT": f"smtp://localhost:{plain_smtp.port}?from=reports@example.com&starttls=0"}
    with pytest.raises(EgressDenied, match="send_email to localhost refused: host localhost is not in this workflow's"):
        await call("send_email", secrets, EgressPolicy(hosts=frozenset({"smtp.example.com"})), **EMAIL)
    with pytest.raises(EgressDenied, match=r"send_email to localhost refused: localhost resolves .*loopback"):
        await call("send_email", secrets, EgressPolicy(hosts=frozenset({"localhost"})), **EMAIL)
    assert plain_smtp.received == []


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


# --- post_message --------------------------------------------------------------------------------


@pytest.fixture
def hooks() -> Iterator[FakeChatWebhooks]:
    with FakeChatWebhooks() as fake:
        yield fake


async def test_post_to_slack(hooks: FakeChatWebhooks) -> None:
    secrets = {"SLACK_HOOK": hooks.slack_url()}
    result = await call(
        "post_message", secrets, webhook="SLACK_HOOK", text="Deploy *done*", username="ci", format="slack"
    )
    assert result == {"status": "sent", "format": "slack"}
    [posted] = hooks.posted
    assert (posted.service, posted.body, posted.content_type) == (
        "slack",
        {"text": "Deploy *done*", "username": "ci"},
        "application/json",
    )


async def test_post_to_discord(hooks: FakeChatWebhooks) -> None:
    secrets = {"DISCORD_HOOK": hooks.discord_url()}
    result = await call("post_message", secrets, webhook="DISCORD_HOOK", text="Build **green**", format="discord")
    assert result == {"status": "sent", "format": "discord"}
    assert [posted.body for posted in hooks.posted] == [{"content": "Build **green**"}]


@pytest.mark.parametrize(
    ("kind", "url_arguments", "message"),
    [
        ("slack", {"token": "wrongToken42"}, r"\(403 invalid_token\); the webhook in secret HOOK is revoked, wrong"),
        ("slack", {"channel": "ARCHIVED"}, r"\(410 channel_is_archived\); the webhook in secret HOOK is revoked"),
        ("discord", {"token": "wrongToken42"}, r"\(401 Invalid Webhook Token\); the webhook in secret HOOK is revoked"),
        ("discord", {"hook_id": "LIMITED"}, r"\(429 You are being rate limited.\); the service is rate limiting"),
    ],
)
async def test_refusals_are_explained_without_the_url(
    hooks: FakeChatWebhooks, kind: str, url_arguments: dict[str, str], message: str
) -> None:
    url = hooks.slack_url(**url_arguments) if kind == "slack" else hooks.discord_url(**url_arguments)
    with pytest.raises(ToolError, match=f"post_message to 127.0.0.1 was refused {message}") as caught:
        await call("post_message", {"HOOK": url}, webhook="HOOK", text="hello", format=kind)
    assert url not in str(caught.value) and url_arguments[next(iter(url_arguments))] not in str(caught.value)
    assert len(hooks.posted) == 1


async def test_discord_length_limit_is_checked_before_posting(hooks: FakeChatWebhooks) -> None:
    with pytest.raises(ToolError, match="Discord takes at most 2000 characters per message"):
        await call("post_message", {"HOOK": hooks.discord_url()}, webhook="HOOK", text="x" * 2001, format="discord")
    assert hooks.posted == []


async def test_auto_format_needs_a_known_host(hooks: FakeChatWebhooks) -> None:
    with pytest.raises(ToolError, match=r"cannot tell the kind of webhook in secret HOOK from its host 127.0.0.1"):
        await call("post_message", {"HOOK": hooks.slack_url()}, webhook="HOOK", text="hello")
    assert hooks.posted == []


async def test_the_webhook_host_passes_the_egress_guard_and_the_url_stays_secret() -> None:
    url = f"https://hooks.slack.com/services/T0/B0/{SLACK_TOKEN}"
    with pytest.raises(EgressDenied) as caught:
        await call(
            "post_message", {"HOOK": url}, EgressPolicy(hosts=frozenset({"discord.com"})), webhook="HOOK", text="x"
        )
    assert str(caught.value).startswith("post_message to hooks.slack.com refused: host hooks.slack.com is not in")
    assert SLACK_TOKEN not in str(caught.value) and "/services/" not in str(caught.value)
    discord = f"https://discord.com/api/webhooks/1/{DISCORD_TOKEN}"
    with pytest.raises(EgressDenied, match=r"post_message to discord.com refused: host discord.com is not in"):
        await call(
            "post_message",
            {"HOOK": discord},
            EgressPolicy(hosts=frozenset({"hooks.slack.com"})),
            webhook="HOOK",
            text="x",
        )


async def test_an_internal_webhook_needs_the_operator(hooks: FakeChatWebhooks) -> None:
    with pytest.raises(EgressDenied, match=r"127.0.0.1 is a loopback address; an operator can open it"):
        await call(
            "post_message",
            {"HOOK": hooks.slack_url()},
            EgressPolicy(hosts=None),
            webhook="HOOK",
            text="x",
            format="slack",
        )
    assert hooks.posted == []


async def test_plain_http_to_a_public_host_is_refused() -> None:
    url = f"http://93.184.216.34/services/T0/B0/{SLACK_TOKEN}"
    policy = EgressPolicy(hosts=frozenset({"93.184.216.34"}))
    with pytest.raises(ToolError, match="the webhook in secret HOOK is plain http:// to a public host; use its https"):
        await call("post_message", {"HOOK": url}, policy, webhook="HOOK", text="x", format="slack")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"webhook": "https://hooks.slack.com/services/x"}, "webhook: String should match pattern"),
        ({"webhook": "HOOK", "text": ""}, "text: String should have at least 1 character"),
        ({"webhook": "HOOK", "text": "x", "format": "teams"}, "format: Input should be 'auto', 'slack' or 'discord'"),
        ({"webhook": "UNGRANTED", "text": "x"}, "secret UNGRANTED is not granted to this workflow"),
        ({"webhook": "NOT_A_URL", "text": "x"}, "the secret NOT_A_URL is not a webhook URL"),
    ],
)
async def test_bad_post_arguments(hooks: FakeChatWebhooks, arguments: dict[str, Any], message: str) -> None:
    secrets = {"HOOK": hooks.slack_url(), "NOT_A_URL": "just-some-token-value"}
    with pytest.raises(ToolError, match=message):
        await call("post_message", secrets, **arguments)
    assert hooks.posted == []


# --- in a workflow run ---------------------------------------------------------------------------


async def test_a_workflow_posts_through_a_granted_webhook_and_never_stores_it(
    flow: AgentFlow, home: Path, hooks: FakeChatWebhooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_TEAM_HOOK", hooks.slack_url())
    source = workflow(
        "notify",
        """
        inputs:
          text: {type: string}
        permissions:
          egress: [127.0.0.1]
        nodes:
          post: {type: tool, tool: post_message, args: {webhook: TEAM_HOOK, text: "{{ inputs.text }}", format: slack}}
        outputs:
          status: "{{ post.status }}"
        """,
    )
    run = await run_source(flow, source, {"text": "release 1.2 is out"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"status": "sent"}
    assert [posted.body for posted in hooks.posted] == [{"text": "release 1.2 is out"}]
    await flow.store.flush()
    for path in home.iterdir():
        if path.is_file():
            assert SLACK_TOKEN.encode() not in path.read_bytes(), f"the webhook URL is in {path.name}"
