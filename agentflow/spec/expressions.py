"""JMESPath expressions, `{{ expr }}` templates and `${env:NAME}` references.

Expressions are JMESPath over the run's JSON state and nothing else: no Python
eval, no Jinja, no attribute access. A template is text with `{{ expr }}`
segments and has no other syntax (no filters, no loops, no escapes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.parser import ParsedResult

from agentflow.spec.functions import FUNCTION_NAMES, FUNCTIONS

MAX_EXPRESSION_CHARS = 10_000
_OPTIONS = jmespath.Options(custom_functions=FUNCTIONS)
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

_OPEN, _CLOSE = "{{", "}}"
_QUOTES = "'\"`"
# AST nodes whose later children are evaluated against the first child's result, not the state.
_SCOPING = frozenset(
    {"subexpression", "index_expression", "projection", "value_projection", "filter_projection", "pipe"}
)
_NO_READS = frozenset({"literal", "current", "identity", "index", "slice", "expref"})


class ExpressionError(ValueError):
    """An expression or template that does not parse or cannot be evaluated."""

    def __init__(self, reason: str, expression: str, column: int | None = None) -> None:
        self.reason = reason
        self.expression = expression
        self.column = column
        where = f" at column {column}" if column is not None else ""
        shown = expression if len(expression) <= 80 else expression[:77] + "..."
        super().__init__(f"{reason}{where} in `{shown}`")


class MissingSecret(KeyError):
    """A `${env:NAME}` reference that cannot be resolved: no such secret, or not granted."""

    def __init__(self, name: str, reason: str | None = None) -> None:
        self.name = name
        self.reason = reason or f"secret {name} is not set"
        super().__init__(name)

    def __str__(self) -> str:
        return f"{self.reason} (referenced as ${{env:{self.name}}})"


@lru_cache(maxsize=4096)
def compile_expression(text: str) -> ParsedResult:
    """Parse a JMESPath expression once; raise `ExpressionError` with the column of the problem."""
    if not text.strip():
        raise ExpressionError("the expression is empty", text, 1)
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters", text)
    try:
        parsed = jmespath.compile(text)
    except jmespath_errors.LexerError as error:
        reason = f"unknown character {error.lexer_value!r}" if len(error.lexer_value) == 1 else str(error.message)
        if error.lexer_value == "-":
            reason += '; quote names that contain dashes, e.g. inputs."my-name"'
        raise ExpressionError(reason, text, error.lexer_position + 1) from None
    except jmespath_errors.IncompleteExpressionError as error:
        raise ExpressionError("the expression ends too early", text, error.lex_position + 1) from None
    except jmespath_errors.ParseError as error:
        raise ExpressionError(_parse_reason(error), text, error.lex_position + 1) from None
    except jmespath_errors.JMESPathError as error:
        raise ExpressionError(str(error), text) from None
    except RecursionError:
        raise ExpressionError("the expression nests too deeply", text) from None
    _check_functions(cast(dict[str, Any], parsed.parsed), text)
    return parsed


def _check_functions(node: dict[str, Any], text: str) -> None:
    """Unknown function names are errors now, not when the run reaches them."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.get("type") == "function_expression" and current.get("value") not in FUNCTION_NAMES:
            from difflib import get_close_matches

            name = str(current.get("value"))
            close = get_close_matches(name, sorted(FUNCTION_NAMES), n=1)
            hint = f"; did you mean {close[0]}()?" if close else f"; available: {', '.join(sorted(FUNCTION_NAMES))}"
            raise ExpressionError(f"unknown function {name}(){hint}", text)
        stack.extend(child for child in current.get("children", []) if isinstance(child, dict))


def _parse_reason(error: jmespath_errors.ParseError) -> str:
    if str(error.token_type).lower() == "eof":
        return "the expression ends too early"
    return f"unexpected {error.token_value!r}"


def evaluate(expression: str, state: Mapping[str, Any]) -> Any:
    """The value of a JMESPath expression over the run state."""
    parsed = compile_expression(expression)
    try:
        return parsed.search(state, options=_OPTIONS)
    except jmespath_errors.JMESPathError as error:
        raise ExpressionError(str(error).replace("\n", " "), expression) from None


@lru_cache(maxsize=4096)
def _segments(template: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, expression) of each `{{ }}` segment; quotes and `{a: b}` braces inside are respected."""
    found: list[tuple[int, int, str]] = []
    start = template.find(_OPEN)
    while start != -1:
        position, depth, quote = start + len(_OPEN), 0, ""
        end = -1
        while position < len(template):
            char = template[position]
            if quote:
                if char == "\\":
                    position += 1
                elif char == quote:
                    quote = ""
            elif char in _QUOTES:
                quote = char
            elif template.startswith(_CLOSE, position) and depth == 0:
                end = position
                break
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            position += 1
        if end == -1:
            raise ExpressionError("`{{` is never closed with `}}`", template, start + 1)
        found.append((start, end + len(_CLOSE), template[start + len(_OPEN) : end].strip()))
        start = template.find(_OPEN, end + len(_CLOSE))
    return tuple(found)


def template_expressions(template: str) -> list[str]:
    """The expressions inside a template's `{{ }}` segments, in order."""
    return [expression for _, _, expression in _segments(template)]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def render(template: Any, state: Mapping[str, Any]) -> Any:
    """Fill `{{ expr }}` segments; a string that is one whole segment yields the raw value, not text."""
    return _render(template, state, None)


def render_with_env(template: Any, state: Mapping[str, Any], secret: Callable[[str], str]) -> Any:
    """Render, resolving `${env:NAME}` through `secret(NAME)` only in the template's own text.

    Values coming from the state are never scanned for references: a model that
    writes `${env:OPENAI_API_KEY}` into its reply gets that text back, not the key.
    """

    def literal(text: str) -> str:
        return ENV_REF.sub(lambda match: secret(match.group(1)), text)

    return _render(template, state, literal)


def _render(template: Any, state: Mapping[str, Any], literal: Callable[[str], str] | None) -> Any:
    if isinstance(template, dict):
        return {key: _render(value, state, literal) for key, value in template.items()}
    if isinstance(template, list):
        return [_render(value, state, literal) for value in template]
    if not isinstance(template, str):
        return template
    segments = _segments(template)
    if len(segments) == 1 and template.strip() == template[segments[0][0] : segments[0][1]]:
        return evaluate(segments[0][2], state)
    parts: list[str] = []
    cursor = 0
    for start, end, expression in segments:
        parts.append(literal(template[cursor:start]) if literal else template[cursor:start])
        parts.append(_as_text(evaluate(expression, state)))
        cursor = end
    parts.append(literal(template[cursor:]) if literal else template[cursor:])
    return "".join(parts)


def static_url_host(url: Any) -> str | None:
    """The host of a URL whose scheme and host are written literally (a template may follow in the path)."""
    if not isinstance(url, str):
        return None
    scheme, separator, rest = url.strip().partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        return None
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not authority or "{{" in authority or "${" in authority or "{{" in scheme or "${" in scheme:
        return None
    host = urlsplit(f"http://{authority}").hostname
    return host.rstrip(".").lower() if host else None


def env_references(value: Any) -> list[str]:
    """Names of the `${env:NAME}` references in a value, recursively, each once, in order."""
    names: dict[str, None] = {}
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            names.update(dict.fromkeys(ENV_REF.findall(current)))
        elif isinstance(current, dict):
            stack.extend(reversed(list(current.values())))
        elif isinstance(current, list):
            stack.extend(reversed(current))
    return list(names)


def _reads(node: dict[str, Any]) -> set[tuple[str, ...]]:
    """Paths read from the state: (root,) and, where the next step is a name, (root, name)."""
    kind = node["type"]
    children: list[dict[str, Any]] = node.get("children", [])
    if kind == "field":
        return {(node["value"],)}
    if kind in _NO_READS:
        return set()
    if kind in _SCOPING:
        found = _reads(children[0])
        if kind == "subexpression" and children[0]["type"] == "field":
            root = children[0]["value"]
            found |= {(root, path[0]) for path in _reads(children[1])}
        return found
    # comparators, and/or/not, function arguments, multi-selects: each child reads the state.
    found = set()
    for child in children:
        found |= _reads(child)
    return found


def referenced_paths(expression: str) -> set[tuple[str, ...]]:
    """The (root,) and (root, name) paths an expression reads from the run state."""
    tree: dict[str, Any] = compile_expression(expression).parsed  # type: ignore[assignment]
    return _reads(tree)


def referenced_roots(expression: str) -> set[str]:
    """Top-level names an expression reads: `inputs`, node ids, `item`, `index`."""
    return {path[0] for path in referenced_paths(expression)}


def referenced_inputs(expression: str) -> set[str]:
    """Names X of the `inputs.X` an expression reads."""
    return {path[1] for path in referenced_paths(expression) if path[0] == "inputs" and len(path) == 2}
