"""The tool registry and the built-in tools."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict

from agentflow.settings import Settings
from agentflow.tools.calculator import calculate
from agentflow.tools.http_request import MAX_BODY_BYTES
from agentflow.tools.registry import Tool, ToolContext, ToolError, ToolRegistry, builtin_registry
from agentflow.trust.egress import EgressDenied, EgressPolicy
from tests.fakes.openai_server import ServerThread

TOOLS = builtin_registry()


async def call(name: str, **arguments: object) -> object:
    return await TOOLS.get(name).call(arguments)


# --- registry ------------------------------------------------------------------------------------


def test_builtins_are_registered() -> None:
    assert {"calculator", "current_time", "http_request", "json_query", "python", "shell"} <= set(TOOLS.names())
    assert "calculator" in TOOLS and "exec" not in TOOLS


def test_unknown_tool_lists_the_available_ones() -> None:
    with pytest.raises(ToolError, match=r"^unknown tool 'exec'; available: .*\bcalculator\b.*\bhttp_request\b"):
        TOOLS.get("exec")


class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


async def _echo(args: EchoArgs, context: ToolContext) -> str:
    return args.text


def test_plugins_register_like_builtins() -> None:
    registry = ToolRegistry()
    echo = registry.register(Tool("echo", "Repeat the text.", EchoArgs, _echo))
    assert registry.get("echo") is echo
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Tool("echo", "again", EchoArgs, _echo))
    registry.register(Tool("echo", "replaced", EchoArgs, _echo), replace=True)
    assert registry.get("echo").description == "replaced"
    with pytest.raises(ValueError, match="tool name"):
        Tool("has space", "", EchoArgs, _echo)


def test_openai_spec_comes_from_the_args_model() -> None:
    spec = TOOLS.get("calculator").openai_spec()
    assert spec["type"] == "function"
    function = spec["function"]
    assert function["name"] == "calculator"
    assert function["parameters"]["properties"]["expression"]["type"] == "string"
    assert function["parameters"]["required"] == ["expression"]
    assert function["parameters"]["additionalProperties"] is False
    http = TOOLS.get("http_request").openai_spec()["function"]["parameters"]["properties"]
    assert "json" in http and "json_body" not in http  # the alias is what the model sees


async def test_bad_arguments_are_a_readable_tool_error() -> None:
    with pytest.raises(ToolError) as caught:
        await TOOLS.get("calculator").call({"expr": "1"})
    message = str(caught.value)
    assert message.startswith("invalid arguments for tool 'calculator': ")
    assert "expression: Field required" in message and "expr: Extra inputs are not permitted" in message


# --- calculator ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2+2", 4),
        ("(2 + 3) * sqrt(16) / 8", 2.5),
        ("2 ** 10", 1024),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("round(3.14159, 2)", 3.14),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("abs(-2.5) + +1", 3.5),
        ("2 * pi", 6.283185307179586),
        ("2 ** -1", 0.5),
    ],
)
def test_calculator_computes(expression: str, expected: float) -> None:
    assert calculate(expression) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("__import__('os')", "function '__import__' is not allowed"),
        ("().__class__", "attribute access ('.__class__') is not allowed"),
        ("(1).__class__.__bases__", "attribute access"),
        ("open('/etc/passwd')", "function 'open' is not allowed"),
        ("x + 1", "name 'x' is not allowed"),
        ("'a' * 3", "only numbers are allowed"),
        ("True + 1", "only numbers are allowed"),
        ("[1, 2]", "is not arithmetic"),
        ("lambda: 1", "is not arithmetic"),
        ("1 if 1 else 2", "is not arithmetic"),
        ("9 ** 9 ** 9", "too large"),
        ("2 ** 100000", "too large"),
        ("10 ** 5000", "too large"),
        ("2.0 ** 5000", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "cannot compute"),
        ("max()", "cannot compute"),
        ("round(x=1)", "plain positional numbers"),
        ("1 +", "not a valid expression"),
        ("1" + "+1" * 600, "longer than 1000"),
        ("+".join(["1"] * 200), "more than 300 parts"),
    ],
)
def test_calculator_refuses(expression: str, error: str) -> None:
    with pytest.raises(ToolError, match=None) as caught:
        calculate(expression)
    assert error in str(caught.value)


async def test_calculator_tool() -> None:
    assert await call("calculator", expression="6 * 7") == 42


# --- json_query and current_time -----------------------------------------------------------------


async def test_json_query() -> None:
    data = {"items": [{"name": "a", "price": 5}, {"name": "b", "price": 20}]}
    assert await call("json_query", data=data, expression="items[?price > `10`].name") == ["b"]
    assert await call("json_query", data=data, expression="missing") is None
    with pytest.raises(ToolError, match="bad JMESPath expression"):
        await call("json_query", data=data, expression="items[?")


async def test_current_time() -> None:
    utc = datetime.fromisoformat(str(await call("current_time")))
    assert utc.utcoffset() == timedelta(0)
    assert abs(utc - datetime.now(UTC)) < timedelta(minutes=1)
    tokyo = datetime.fromisoformat(str(await call("current_time", timezone="Asia/Tokyo")))
    assert tokyo.utcoffset() == timedelta(hours=9)
    for bad in ("Mars/Olympus", "../../etc/passwd"):
        with pytest.raises(ToolError, match="unknown time zone"):
            await call("current_time", timezone=bad)


# --- http_request against a local server ---------------------------------------------------------


def _http_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/json", methods=["GET", "HEAD"])
    async def json_route() -> dict[str, str]:
        return {"hello": "world"}

    @app.api_route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "query": dict(request.query_params),
                "header": request.headers.get("x-test"),
                "content_type": request.headers.get("content-type"),
                "body": body.decode(),
            },
            status_code=201,
        )

    @app.get("/big")
    async def big() -> PlainTextResponse:
        return PlainTextResponse("x" * (MAX_BODY_BYTES * 2))

    @app.get("/redirect")
    async def redirect() -> RedirectResponse:
        return RedirectResponse("/json", status_code=302)

    @app.get("/missing")
    async def missing() -> PlainTextResponse:
        return PlainTextResponse("nope", status_code=404)

    @app.get("/slow")
    async def slow() -> PlainTextResponse:
        await asyncio.sleep(0.6)
        return PlainTextResponse("late")

    return app


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = ServerThread(_http_app())
    server.start()
    yield server.url
    server.stop()


# The test server is on loopback, closed by default: open it as an operator would.
LOCAL = ToolContext(egress=EgressPolicy.from_settings(Settings(egress_allow_internal=("127.0.0.1",)), hosts=None))


async def http(**arguments: object) -> object:
    return await TOOLS.get("http_request").call(arguments, LOCAL)


async def test_http_refuses_loopback_unless_the_operator_opened_it(http_server: str) -> None:
    with pytest.raises(EgressDenied, match=r"http_request to 127\.0\.0\.1 refused: 127\.0\.0\.1 is a loopback"):
        await call("http_request", url=f"{http_server}/json")


async def test_http_get_parses_json(http_server: str) -> None:
    response = await http(url=f"{http_server}/json")
    assert isinstance(response, dict)
    assert response["status"] == 200 and response["body"] == {"hello": "world"}
    assert response["headers"]["content-type"] == "application/json"


async def test_http_post_json_with_headers_and_params(http_server: str) -> None:
    response = await http(
        method="post",
        url=f"{http_server}/echo",
        headers={"X-Test": "yes"},
        params={"q": "search", "n": 2},
        json={"a": 1},
    )
    assert isinstance(response, dict)
    assert response["status"] == 201
    assert response["body"] == {
        "method": "POST",
        "query": {"q": "search", "n": "2"},
        "header": "yes",
        "content_type": "application/json",
        "body": '{"a":1}',
    }


async def test_http_raw_body_and_errors_are_results(http_server: str) -> None:
    sent = await http(method="PUT", url=f"{http_server}/echo", body="plain text")
    assert isinstance(sent, dict) and sent["body"]["body"] == "plain text"
    missing = await http(url=f"{http_server}/missing")
    assert isinstance(missing, dict) and (missing["status"], missing["body"]) == (404, "nope")


async def test_http_redirects_are_not_followed_unless_asked(http_server: str) -> None:
    redirect = await http(url=f"{http_server}/redirect")
    assert isinstance(redirect, dict) and redirect["status"] == 302
    assert redirect["headers"]["location"] == "/json"
    followed = await http(url=f"{http_server}/redirect", follow_redirects=True)
    assert isinstance(followed, dict) and followed["body"] == {"hello": "world"}


async def test_http_body_is_truncated(http_server: str) -> None:
    response = await http(url=f"{http_server}/big")
    assert isinstance(response, dict)
    assert len(response["body"]) == MAX_BODY_BYTES and response["truncated"] is True


async def test_http_head(http_server: str) -> None:
    response = await http(method="HEAD", url=f"{http_server}/json")
    assert isinstance(response, dict) and (response["status"], response["body"]) == (200, "")


async def test_http_timeout_and_connection_errors(http_server: str) -> None:
    with pytest.raises(ToolError, match=r"timed out after 0\.2 s"):
        await http(url=f"{http_server}/slow", timeout=0.2)
    with pytest.raises(ToolError, match=r"GET http://127\.0\.0\.1:9/ failed: ConnectError"):
        await http(url="http://127.0.0.1:9/")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"url": "file:///etc/passwd"}, "must be an absolute http:// or https:// URL"),
        ({"url": "ftp://example.com/x"}, "must be an absolute http:// or https:// URL"),
        ({"url": "/relative"}, "must be an absolute http:// or https:// URL"),
        ({"url": "http://x", "method": "TRACE"}, "method: Input should be"),
        ({"url": "http://x", "timeout": 500}, "timeout: Input should be less than or equal to 120"),
        ({"url": "http://x", "json": {}, "body": "b"}, "give either `json` or `body`"),
        ({"url": "http://x", "cookies": {}}, "cookies: Extra inputs are not permitted"),
    ],
)
async def test_http_bad_arguments(arguments: dict[str, object], error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await TOOLS.get("http_request").call(arguments)
    assert error in str(caught.value)
