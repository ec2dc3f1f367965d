"""Pydantic validation errors turned into located, actionable messages about a workflow.

Pydantic's `loc` names union tags and members (`('spec', 'nodes', 'x', 'llm',
'prompt')`, `(..., 'model', 'str')`) that are not in the YAML; walking the
model annotations alongside the data tells which elements are real keys.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from difflib import get_close_matches
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from agentflow.spec.loader import DataPath
from agentflow.spec.models import FUTURE_NODE_TYPES, NODE_TYPES, InnerNode, Workflow

Message = tuple[DataPath, str]

_ABSENT = object()
# Error kinds whose input is the whole mapping or is already quoted in the message.
_NO_GOT = frozenset({"value_error", "model_type", "model_attributes_type", "dict_type", "too_short", "too_long"})


def model_error_messages(error: ValidationError, data: Any) -> list[Message]:
    """Each pydantic error as (path in the data, message); one message per union, not per member."""
    details = error.errors(include_url=False)
    found: list[Message] = []
    guessed: set[tuple[DataPath, str]] = set()
    for detail in details:
        if detail["type"] == "extra_forbidden":
            path = data_path(detail["loc"], data)
            model = _model_at(detail["loc"][:-1])
            keys = [info.alias or name for name, info in model.model_fields.items()] if model else []
            hint = suggest(str(detail["loc"][-1]), keys, "valid keys are")
            if hint.startswith("did you mean"):
                # The missing key it probably meant is reported by this message already.
                guessed.add((path[:-1], hint.split("'")[1]))
            message = f"unknown key '{detail['loc'][-1]}' in {describe(path[:-1], data)}; {hint}"
            found.append((path, message.rstrip("; ")))
    grouped: dict[DataPath, list[str]] = {}
    for detail in details:
        kind, loc, path = detail["type"], detail["loc"], data_path(detail["loc"], data)
        if kind == "extra_forbidden" or (kind == "missing" and (path, str(loc[-1])) in guessed):
            continue
        if kind == "missing":
            fix = ": write `apiVersion: agentflow/v1` at the top" if loc == ("apiVersion",) else ""
            found.append((path, f"{describe(path, data)} needs '{loc[-1]}'{fix}"))
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            tags = re.findall(r"'([^']*)'", str((detail.get("ctx") or {}).get("expected_tags", "")))
            found.append(_node_type_error(path, data, tags or _node_types(loc)))
        elif loc == ("apiVersion",):
            found.append(
                (path, f"apiVersion must be agentflow/v1, not '{detail['input']}': write `apiVersion: agentflow/v1`")
            )
        elif loc == ("metadata", "name") and kind == "string_pattern_mismatch":
            slug = re.sub(r"[^a-z0-9-]+", "-", str(detail["input"]).lower()).strip("-")[:63] or "my-workflow"
            found.append((path, f"metadata.name must be a slug of lowercase letters, digits and dashes, e.g. '{slug}'"))
        elif kind.endswith("_type") and path and loc[-1] != path[-1]:
            grouped.setdefault(path, []).append(_readable(detail["msg"]).removeprefix("should be "))
        else:
            message = _readable(detail["msg"])
            got = repr(detail["input"])
            got = f" (got {got if len(got) <= 60 else got[:57] + '...'})" if kind not in _NO_GOT else ""
            found.append((path, f"{_label(path, data)}{' ' if message.startswith('should') else ': '}{message}{got}"))
    found.extend(
        (path, f"{_label(path, data)} should be {' or '.join(dict.fromkeys(kinds))}") for path, kinds in grouped.items()
    )
    return found


def _readable(message: str) -> str:
    """Pydantic's wording, shortened and in our terms ("a mapping", not "a valid dictionary")."""
    message = message.removeprefix("Value error, ").replace(" after validation", "")
    message = re.sub(r"^(Input|Dictionary|List|String) should", "should", message)
    return message.replace(" or object to extract fields from", "").replace("a valid dictionary", "a mapping")


def _node_types(loc: tuple[str | int, ...]) -> list[str]:
    if "node" not in loc[3:]:
        return list(NODE_TYPES)
    members = get_args(get_args(InnerNode)[0])
    return [get_args(member.model_fields["type"].annotation)[0] for member in members]


def _node_type_error(path: DataPath, data: Any, tags: list[str]) -> Message:
    choices = ", ".join(tags)
    node = value_at(data, path)
    if not isinstance(node, dict) or "type" not in node:
        return path, f"{describe(path, data)} needs 'type': one of {choices}"
    tag = str(node["type"])
    if tag in NODE_TYPES:
        return (*path, "type"), f"a map's inner node cannot be a {tag} node; use one of {choices}"
    if tag in FUTURE_NODE_TYPES:
        return (*path, "type"), f"node type '{tag}' is not available in this version; use one of {choices}"
    close = get_close_matches(tag, tags, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return (*path, "type"), f"unknown node type '{tag}'{hint}; use one of {choices}"


def data_path(loc: tuple[str | int, ...], data: Any) -> DataPath:
    """The part of a pydantic `loc` that is in the data: union tags and member names are dropped."""
    annotation: Any = Workflow
    path: list[str | int] = []
    for element in loc:
        # After a union, `loc` holds the tag (`tool`) or member (`str`): not a key, even if a `tool:` key exists.
        in_union = annotation is not None and get_origin(_unwrap(annotation)) in (Union, UnionType)
        annotation = None if annotation is None else _step(annotation, element)
        child = _ABSENT if in_union else _child(data, element)
        if child is not _ABSENT:
            data = child
            path.append(element)
    return tuple(path)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _step(annotation: Any, element: str | int) -> Any:
    """The annotation one `loc` element further in: a field, a dict value, a list item or a tagged member."""
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        fields = annotation.model_fields.items()
        return next((info.annotation for name, info in fields if element in (name, info.alias)), None)
    origin = get_origin(annotation)
    if origin is dict:
        return get_args(annotation)[1]
    if origin is list:
        return get_args(annotation)[0]
    if origin in (Union, UnionType):
        for member in map(_unwrap, get_args(annotation)):
            tag = member.model_fields.get("type") if _is_model(member) else None
            if tag is not None and get_origin(tag.annotation) is Literal and element in get_args(tag.annotation):
                return member
    return None


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class validating the mapping at a pydantic `loc`."""
    annotation: Any = Workflow
    for element in loc:
        annotation = _step(annotation, element)
        if annotation is None:
            return None
    annotation = _unwrap(annotation)
    return annotation if _is_model(annotation) else None


def describe(path: DataPath, data: Any) -> str:
    """A reader's name for the mapping at `path`: "node 'x' (llm)", "retry of node 'x' (llm)", "spec.budget"."""
    if len(path) >= 3 and path[:2] == ("spec", "nodes"):
        node_id, rest = path[2], path[3:]
        node = value_at(data, path[:3])
        owner = f"node '{node_id}'" + (f" ({node['type']})" if isinstance(node, dict) and "type" in node else "")
        if rest[:1] == ("node",) and isinstance(node, dict) and node.get("type") == "map":
            inner = node.get("node")
            kind = f" ({inner['type']})" if isinstance(inner, dict) and "type" in inner else ""
            owner, rest = f"the inner node of map '{node_id}'{kind}", rest[1:]
        return f"{dotted(rest)} of {owner}" if rest else owner
    if len(path) >= 3 and path[:2] == ("spec", "inputs"):
        return f"input '{path[2]}'" + (f" at {dotted(path[3:])}" if path[3:] else "")
    return dotted(path) or "the workflow"


def _label(path: DataPath, data: Any) -> str:
    """ "'usd' in spec.budget" for a field; a node or an input by its own name."""
    if (
        not path
        or not isinstance(path[-1], str)
        or (len(path) == 3 and path[:2] in (("spec", "nodes"), ("spec", "inputs")))
    ):
        return describe(path, data)
    return f"'{path[-1]}' in {describe(path[:-1], data)}"


def dotted(path: DataPath) -> str:
    """`spec.nodes.route.cases[0].when` from a path."""
    return "".join(f"[{element}]" if isinstance(element, int) else f".{element}" for element in path).lstrip(".")


def _child(container: Any, element: str | int) -> Any:
    if isinstance(container, dict) and isinstance(element, str):
        return container.get(element, _ABSENT)
    if isinstance(container, list) and isinstance(element, int) and 0 <= element < len(container):
        return container[element]
    return _ABSENT


def value_at(data: Any, path: DataPath) -> Any:
    """The value at `path`, or None when any step is missing."""
    for element in path:
        data = _child(data, element)
        if data is _ABSENT:
            return None
    return data


def suggest(word: str, choices: Collection[str], what: str) -> str:
    """ "did you mean 'x'?" for a close match, else "{what}: a, b, c"."""
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{what}: {', '.join(choices)}" if choices else ""
