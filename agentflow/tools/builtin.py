"""The first built-in tools; every group is an entry point of `agentflow.tools`, like any plugin's."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from agentflow.settings import Settings
from agentflow.spec.expressions import ExpressionError, evaluate
from agentflow.tools.calculator import CALCULATOR
from agentflow.tools.http_request import HTTP_REQUEST
from agentflow.tools.registry import Tool, ToolContext, ToolError


class JsonQueryArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Any = Field(description="The JSON value to query")
    expression: str = Field(description="A JMESPath expression, e.g. `items[?price > `10`].name`")


async def json_query(args: JsonQueryArgs, context: ToolContext) -> Any:
    # The same JMESPath dialect (and error messages) as workflow expressions.
    try:
        return evaluate(args.expression, args.data)
    except ExpressionError as exc:
        raise ToolError(f"bad JMESPath expression: {exc}") from None


class CurrentTimeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("UTC", description="An IANA time zone name, e.g. Europe/Paris")


async def current_time(args: CurrentTimeArgs, context: ToolContext) -> str:
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {args.timezone!r}; use an IANA name such as UTC or Europe/Paris") from None
    return datetime.now(zone).isoformat(timespec="seconds")


JSON_QUERY = Tool(
    name="json_query",
    description="Select or reshape JSON data with a JMESPath expression.",
    args_model=JsonQueryArgs,
    fn=json_query,
    pure=True,
)
CURRENT_TIME = Tool(
    name="current_time",
    description="The current date and time (ISO 8601) in a time zone.",
    args_model=CurrentTimeArgs,
    fn=current_time,
    pure=True,
)


def tools(settings: Settings) -> list[Tool]:
    return [HTTP_REQUEST, CALCULATOR, JSON_QUERY, CURRENT_TIME]
