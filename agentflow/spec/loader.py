"""A YAML loader that builds plain data from parser events and never constructs objects.

PyYAML's constructors are where `!!python/object/apply` runs code, and its
Composer recurses once per nesting level; so the tree is built here, iteratively,
from `yaml.parse()` events, with limits on size, depth and alias expansion.

Scalars follow the YAML 1.2 core schema: `yes`, `no`, `on` and `off` stay
strings, and mapping keys are always the key's text. Merge keys (`<<: *anchor`)
are supported: explicit keys win over merged ones, and earlier merges over later.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agentflow.spec.errors import SpecError, SpecErrors

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_ERRORS = 50

DataPath = tuple[str | int, ...]
Position = tuple[int, int]

# The C parser is ~20x faster and fails fast on hostile input; the pure-Python one is identical in events, and is
# the fallback when a parser refuses deep nesting at a limit of its own (see `_parse`).
_PARSERS: tuple[Any, ...] = (yaml.CSafeLoader, yaml.SafeLoader) if yaml.__with_libyaml__ else (yaml.SafeLoader,)

_CORE = "tag:yaml.org,2002:"
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCTAL = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INFINITY = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")
_HINTS = {
    "mapping values are not allowed": "quote the value if it contains ': '",
    "cannot start any token": "indent with spaces, not tabs, and quote values that start with @ or `",
    "found undefined tag handle": "tags are not allowed; workflows are data",
}


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """The document as plain data, and where each key or item starts (1-based line, column)."""

    data: Any
    positions: dict[DataPath, Position]

    def position(self, path: DataPath) -> Position:
        """Where `path` is written, or its nearest written ancestor (values from aliases have none)."""
        for length in range(len(path), -1, -1):
            found = self.positions.get(path[:length])
            if found is not None:
                return found
        return (1, 1)


def _too_deep() -> str:
    return (
        f"nesting is deeper than {MAX_DEPTH} levels; flatten the structure: "
        "use fewer lists and mappings inside one another"
    )


class _Fatal(Exception):
    """Stop building: the document is hostile or unreadable past this point."""


@dataclass(slots=True)
class _Anchor:
    value: Any
    size: int
    height: int
    text: str | None  # a scalar's source text, used when the alias is a mapping key


@dataclass(slots=True)
class _Frame:
    path: DataPath
    anchor: str | None
    start_count: int
    is_mapping: bool
    items: list[Any] = field(default_factory=list)
    height: int = 0
    # mapping state: key awaiting its value, and entries ("key", name, value) or ("merge", mappings, position)
    key: str | None = None
    key_position: Position = (1, 1)
    key_is_merge: bool = False
    has_key: bool = False
    skip_value: bool = False
    key_lines: dict[str, int] = field(default_factory=dict)


_RECURSIVE = object()
_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
# Only these first characters can begin a null, bool or number; everything else is a string at once.
_NON_STRING_START = frozenset("~nNtTfF0123456789+-.")


class _Builder:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.errors: list[SpecError] = []
        self.positions: dict[DataPath, Position] = {}
        self.anchors: dict[str, _Anchor | object] = {}
        self.stack: list[_Frame] = []
        self.count = 0
        self.documents = 0
        self.result: Any = None

    def error(self, position: Position, message: str) -> None:
        self.errors.append(SpecError(self.filename, position[0], position[1], message))

    def fatal(self, position: Position, message: str) -> _Fatal:
        self.error(position, message)
        return _Fatal()

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, _ENDS):
            self.end()
            return
        mark = event.start_mark
        position = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        if len(self.errors) >= MAX_ERRORS:
            # A hostile document can hold 100,000 problems: reading on would cost time, not information.
            raise self.fatal(position, f"stopped after {MAX_ERRORS} problems; fix those first and validate again")
        if isinstance(event, yaml.ScalarEvent):
            self.count_nodes(1, position, alias=False)
            value = self.scalar(event, position)
            if event.anchor is not None:
                self.anchors[event.anchor] = _Anchor(value, 1, 0, event.value)
            self.emit(value, 0, position, key_text=event.value, plain=event.implicit[0] and event.tag is None)
        elif isinstance(event, _STARTS):
            self.start(event, position)
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event, position)
        elif isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fatal(position, "found a second YAML document (---); a workflow file holds exactly one")

    def count_nodes(self, added: int, position: Position, alias: bool) -> None:
        self.count += added
        if self.count <= MAX_NODES:
            return
        if alias:
            raise self.fatal(
                position, f"alias expansion exceeds {MAX_NODES} values: a YAML alias bomb? write the values out"
            )
        raise self.fatal(position, f"the document holds more than {MAX_NODES} values; split it into smaller workflows")

    def check_depth(self, depth: int, position: Position) -> None:
        if depth > MAX_DEPTH:
            raise self.fatal(position, _too_deep())

    def path_for_next(self) -> DataPath:
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if frame.is_mapping:
            return (*frame.path, frame.key) if frame.has_key and frame.key is not None else frame.path
        return (*frame.path, len(frame.items))

    def start(self, event: yaml.CollectionStartEvent, position: Position) -> None:
        is_mapping = isinstance(event, yaml.MappingStartEvent)
        self.check_depth(len(self.stack) + 1, position)
        self.check_tag(event.tag, position, "map" if is_mapping else "seq")
        path = self.path_for_next()
        self.record(path, position)
        frame = _Frame(path, event.anchor, self.count, is_mapping)
        self.count_nodes(1, position, alias=False)
        if event.anchor is not None:
            self.anchors[event.anchor] = _RECURSIVE
        self.stack.append(frame)

    def end(self) -> None:
        frame = self.stack.pop()
        value = self.finish_mapping(frame) if frame.is_mapping else frame.items
        height = frame.height + 1
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchor(value, self.count - frame.start_count, height, None)
        self.emit(value, height, self.positions.get(frame.path, (1, 1)), key_text=None, plain=False)

    def finish_mapping(self, frame: _Frame) -> dict[str, Any]:
        explicit = {entry[1] for entry in frame.items if entry[0] == "key"}
        result: dict[str, Any] = {}
        for kind, name_or_mappings, value_or_position in frame.items:
            if kind == "key":
                result[name_or_mappings] = value_or_position
                continue
            for mapping in name_or_mappings:
                for key, value in mapping.items():
                    if key not in explicit and key not in result:
                        result[key] = value
                        self.positions[(*frame.path, key)] = value_or_position
        return result

    def alias(self, event: yaml.AliasEvent, position: Position) -> None:
        anchor = self.anchors.get(event.anchor or "")
        if anchor is _RECURSIVE:
            raise self.fatal(
                position, f"alias *{event.anchor} is inside the node it refers to; recursive data is not allowed"
            )
        if not isinstance(anchor, _Anchor):
            self.error(position, f"alias *{event.anchor} has no anchor &{event.anchor} defined before it")
            self.emit(None, 0, position, key_text=None, plain=False)
            return
        self.count_nodes(anchor.size, position, alias=True)
        self.check_depth(len(self.stack) + anchor.height, position)
        # A copy per use: later mutation of one use must not show up in the others.
        value = copy.deepcopy(anchor.value) if anchor.height else anchor.value
        self.emit(value, anchor.height, position, key_text=anchor.text, plain=False)

    def record(self, path: DataPath, position: Position) -> None:
        self.positions.setdefault(path, position)

    def emit(self, value: Any, height: int, position: Position, key_text: str | None, plain: bool) -> None:
        """Attach a finished node to its parent: as the root, a sequence item, a key or a value."""
        if not self.stack:
            self.record((), position)
            self.result = value
            return
        frame = self.stack[-1]
        frame.height = max(frame.height, height)
        if not frame.is_mapping:
            self.record((*frame.path, len(frame.items)), position)
            frame.items.append(value)
        elif not frame.has_key:
            self.take_key(frame, value, position, key_text, plain)
        else:
            self.take_value(frame, value, position)

    def take_key(self, frame: _Frame, value: Any, position: Position, key_text: str | None, plain: bool) -> None:
        frame.has_key = True
        frame.key_position = position
        frame.key_is_merge = plain and key_text == "<<"
        frame.skip_value = False
        frame.key = None
        if key_text is None or isinstance(value, dict | list):
            self.error(position, "mapping keys must be plain strings, not lists or mappings")
            frame.skip_value = True
            return
        # The value's own keys are positioned under this key, even when it is refused or is `<<`.
        frame.key = key_text
        first_line = frame.key_lines.get(key_text)
        if first_line is not None:
            self.error(position, f"duplicate key '{key_text}' (first at line {first_line}); each key may appear once")
            frame.skip_value = True
            return
        frame.key_lines[key_text] = position[0]
        if not frame.key_is_merge:
            self.record((*frame.path, key_text), position)

    def take_value(self, frame: _Frame, value: Any, position: Position) -> None:
        frame.has_key = False
        if frame.skip_value:
            return
        if not frame.key_is_merge:
            frame.items.append(("key", frame.key, value))
            return
        mappings = value if isinstance(value, list) else [value]
        if not all(isinstance(mapping, dict) for mapping in mappings):
            self.error(position, "the merge key << takes a mapping or a list of mappings, e.g. `<<: *defaults`")
            return
        frame.items.append(("merge", mappings, frame.key_position))

    def check_tag(self, tag: str | None, position: Position, expected: str) -> None:
        if tag is None or tag == "!" or tag == _CORE + expected:
            return
        shown = "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
        if tag.startswith(_CORE) and tag[len(_CORE) :] in ("str", "int", "float", "bool", "null", "map", "seq"):
            self.error(position, f"tag {shown} does not fit this value; remove the tag")
        else:
            self.error(position, f"tags are not allowed; workflows are data: remove {shown}")

    def scalar(self, event: yaml.ScalarEvent, position: Position) -> Any:
        text, tag = event.value, event.tag
        if tag is None and event.implicit[0]:
            return resolve_scalar(text)
        if tag is None or tag == "!" or tag == _CORE + "str":
            return text
        kind = tag[len(_CORE) :] if tag.startswith(_CORE) else None
        if kind in ("int", "float", "bool", "null"):
            value = resolve_scalar(text)
            fits = {
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, int | float) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "null": value is None,
            }[kind]
            if fits:
                return float(value) if kind == "float" else value
            self.error(position, f"'{text}' is not a valid {kind} (tag !!{kind}); fix the value or remove the tag")
            return text
        self.check_tag(tag, position, "str")
        return text


def resolve_scalar(text: str) -> Any:
    """The value of an untagged plain scalar under the YAML 1.2 core schema."""
    if text and text[0] not in _NON_STRING_START:
        return text
    if _NULL.match(text):
        return None
    if _TRUE.match(text):
        return True
    if _FALSE.match(text):
        return False
    if _INT.match(text):
        return int(text, 10)
    if _OCTAL.match(text):
        return int(text[2:], 8)
    if _HEX.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        return float(text)
    if _INFINITY.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


def _decode(source: bytes, filename: str) -> str:
    try:
        return source.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        before = source[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise SpecErrors([SpecError(filename, line, column, "the file is not UTF-8 text; save it as UTF-8")]) from None


def _line_column(text: str, index: int) -> Position:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _syntax_error(error: yaml.YAMLError, text: str, filename: str) -> SpecError:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        message = f"YAML syntax error: {error.problem}"
        if error.context and error.context_mark is not None:
            message += f" ({error.context} at line {error.context_mark.line + 1})"
        hint = next((hint for needle, hint in _HINTS.items() if needle in str(error.problem)), None)
        if hint:
            message += f"; {hint}"
        return SpecError(filename, mark.line + 1, mark.column + 1, message)
    if isinstance(error, yaml.reader.ReaderError):
        line, column = _line_column(text, error.position)
        code = ord(error.character) if isinstance(error.character, str) else int(error.character)
        return SpecError(filename, line, column, f"character U+{code:04X} is not allowed in YAML; remove it")
    return SpecError(filename, 1, 1, f"YAML syntax error: {error}")


def _nesting_refused(error: yaml.YAMLError) -> Position | None:
    """Where the parser gave up on nesting depth (libyaml: "exceeded maximum nesting depth"), if it did."""
    if not isinstance(error, yaml.MarkedYAMLError) or "nesting" not in str(error.problem).lower():
        return None
    mark = error.problem_mark or error.context_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _build(text: str, filename: str, parser: Any) -> tuple[_Builder, bool]:
    """The builder fed from `parser`'s events, and whether the parser refused the nesting depth."""
    builder = _Builder(filename)
    try:
        for event in yaml.parse(text, Loader=parser):
            builder.feed(event)
    except _Fatal:
        pass
    except yaml.YAMLError as error:
        position = _nesting_refused(error)
        if position is None:
            builder.errors.append(_syntax_error(error, text, filename))
        else:
            builder.error(position, _too_deep())
            return builder, True
    return builder, False


def _parse(text: str, filename: str) -> _Builder:
    """Build `text`, so that our depth limit and its message win over any limit of PyYAML's own.

    A scanner looks ahead, so one with a nesting limit can refuse a document before the builder has seen
    MAX_DEPTH + 1 levels of events. The next parser then reads the document afresh: the pure-Python one
    streams events with no depth limit of its own, and the builder stops it at depth MAX_DEPTH + 1. If
    every parser refuses, the document is deeper than PyYAML reads, and the error says so in our words.
    """
    for parser in _PARSERS:
        builder, refused = _build(text, filename, parser)
        if not refused:
            break
        quick = _refuse_from_prefix(text, filename)
        if quick is not None:
            return quick
    return builder


def _refuse_from_prefix(text: str, filename: str) -> _Builder | None:
    """Our depth error from the shortest prefix holding MAX_DEPTH + 1 flow openers, when it shows one.

    The pure-Python scanner costs O(depth²) in flow context, so reading 5,000 nested `[` takes ~100 ms;
    the same error from a prefix a few hundred characters long takes about 1 ms, at the same position.
    """
    openers = 0
    for index, character in enumerate(text):
        if character in "[{":
            openers += 1
            if openers > MAX_DEPTH:
                builder, _ = _build(text[: index + 1], filename, yaml.SafeLoader)
                deep = builder.errors and builder.errors[0].message == _too_deep()
                return builder if deep else None
    return None


def load_yaml(source: str | bytes, filename: str = "<string>", max_bytes: int = MAX_FILE_BYTES) -> LoadedDocument:
    """Parse one YAML document into plain data with positions; raise `SpecErrors` on any problem."""
    # A character is at least one byte, so a long string is refused without encoding it.
    too_big = len(source) > max_bytes or (
        isinstance(source, str) and len(source.encode("utf-8", "replace")) > max_bytes
    )
    if too_big:
        message = (
            f"the file is larger than {max_bytes} bytes, the limit for a workflow; split it into smaller workflows"
        )
        raise SpecErrors([SpecError(filename, 1, 1, message)])
    text = _decode(source, filename) if isinstance(source, bytes) else source
    builder = _parse(text, filename)
    if not builder.errors and builder.documents == 0:
        builder.error((1, 1), "the file is empty; a workflow starts with `apiVersion: agentflow/v1`")
    if builder.errors:
        raise SpecErrors(builder.errors)
    return LoadedDocument(builder.result, builder.positions)
