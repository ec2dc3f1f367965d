"""The run's LangGraph state: node results and statuses, merged by reducers."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from agentflow.engine.budget import add_usage


def merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    if not right:
        return left or {}
    return {**(left or {}), **right}


def merge_parts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Map branch results by map id then index; a `None` entry clears a finished map."""
    merged = dict(left or {})
    for map_id, parts in (right or {}).items():
        if parts is None:
            merged.pop(map_id, None)
        else:
            merged[map_id] = {**merged.get(map_id, {}), **parts}
    return merged


class RunState(TypedDict, total=False):
    inputs: dict[str, Any]
    results: Annotated[dict[str, Any], merge]
    # node id -> running | done | skipped | pending (reset by a loop)
    status: Annotated[dict[str, str], merge]
    selected: Annotated[dict[str, str | None], merge]
    iterations: Annotated[dict[str, int], merge]
    parts: Annotated[dict[str, Any], merge_parts]
    map_sizes: Annotated[dict[str, list[float]], merge]  # map id -> [branch count, started at]
    usage: Annotated[dict[str, float], add_usage]


def scope_of(state: RunState) -> dict[str, Any]:
    """What expressions see: `inputs` and every node's result by id."""
    return {**state.get("results", {}), "inputs": state.get("inputs", {})}


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, and empty strings, lists and objects are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)):
        return len(value) > 0
    return True
