"""The string helpers added to JMESPath, and unknown functions caught at validation."""

from __future__ import annotations

import pytest

from agentflow.spec.expressions import ExpressionError, compile_expression, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("upper(name)", "ADA"),
        ("lower('ADA')", "ada"),
        ("trim('  a ')", "a"),
        ("split('a,b', ',')", ["a", "b"]),
        ("replace(name, 'a', 'o')", "Ado"),
        ("take(`[1, 2, 3]`, `2`)", [1, 2]),
        ('to_json(`{"b": 1}`)', '{"b": 1}'),
        ("length(name)", 3),
    ],
)
def test_functions(expression: str, expected: object) -> None:
    assert evaluate(expression, {"name": "Ada"}) == expected


def test_unknown_function_is_a_compile_error_with_a_suggestion() -> None:
    with pytest.raises(ExpressionError, match=r"unknown function uper\(\); did you mean upper\(\)\?"):
        compile_expression("uper(name)")


def test_wrong_argument_type_is_an_evaluation_error() -> None:
    with pytest.raises(ExpressionError, match="upper"):
        evaluate("upper(`1`)", {})
