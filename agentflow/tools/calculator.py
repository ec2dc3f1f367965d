"""`calculator`: arithmetic the model can trust, evaluated from the syntax tree (never eval)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentflow.tools.registry import Tool, ToolContext, ToolError

MAX_LENGTH = 1000
MAX_NODES = 300
MAX_BITS = 4096
"""Largest integer result, about 1,200 decimal digits: `9**9**9` is refused before it is computed."""

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
_ALLOWED = "numbers, + - * / // % **, parentheses, " + ", ".join([*_FUNCTIONS, *_CONSTANTS])


class CalculatorArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(description="Arithmetic such as `(2 + 3) * sqrt(16) / 7`", max_length=MAX_LENGTH)


def calculate(expression: str) -> Number:
    """Evaluate an arithmetic expression; raise ToolError on anything that is not arithmetic."""
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ToolError(f"not a valid expression: {getattr(exc, 'msg', exc)}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"the expression has more than {MAX_NODES} parts")
    try:
        return _evaluate(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"cannot compute: {exc}") from None


def _evaluate(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}; allowed: {_ALLOWED}")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"name '{node.id}' is not allowed; allowed: {_ALLOWED}")
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Attribute):
        raise ToolError(f"attribute access ('.{node.attr}') is not allowed; allowed: {_ALLOWED}")
    raise ToolError(f"'{ast.unparse(node)}' is not arithmetic; allowed: {_ALLOWED}")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise ToolError(f"function '{name}' is not allowed; allowed: {_ALLOWED}")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ToolError(f"{node.func.id}() takes plain positional numbers only")
    args = [_evaluate(arg) for arg in node.args]
    return _bounded(_FUNCTIONS[node.func.id](*args))


def _check_power(base: Number, exponent: Number) -> None:
    if abs(base) <= 1:
        return
    if isinstance(exponent, int) and isinstance(base, int):
        # Estimate the size first: computing 10**10**9 would freeze the process.
        if exponent > 0 and exponent * math.log2(abs(base)) > MAX_BITS:
            raise ToolError(f"the result is too large (more than {MAX_BITS} bits)")
    elif abs(exponent) > 10_000:
        raise ToolError("the exponent is too large")


def _bounded(value: Any) -> Number:
    if not isinstance(value, int | float):  # e.g. (-8) ** 0.5 is complex
        raise ToolError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ToolError(f"the result is too large (more than {MAX_BITS} bits)")
    return value


async def _run(args: CalculatorArgs, context: ToolContext) -> Number:
    return calculate(args.expression)


CALCULATOR = Tool(
    name="calculator",
    description=f"Evaluate an arithmetic expression exactly. Supports {_ALLOWED}.",
    args_model=CalculatorArgs,
    fn=_run,
    pure=True,
)
