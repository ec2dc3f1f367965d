"""JMESPath expressions, `{{ }}` templates and `${env:NAME}` references."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.spec.expressions import (
    ENV_REF,
    MAX_EXPRESSION_CHARS,
    ExpressionError,
    MissingSecret,
    compile_expression,
    env_references,
    evaluate,
    referenced_inputs,
    referenced_paths,
    referenced_roots,
    render,
    render_with_env,
    template_expressions,
)

STATE: dict[str, Any] = {
    "inputs": {"ticket": "printer on fire", "count": 3},
    "classify": {"category": "bug", "topics": ["printer", "fire"]},
    "draft": "Dear customer",
    "skipped": None,
}


def test_compile_is_cached() -> None:
    assert compile_expression("inputs.ticket") is compile_expression("inputs.ticket")


@pytest.mark.parametrize(
    ("expression", "column", "fragment"),
    [
        ("classify.category ==", 21, "ends too early"),
        ("inputs.", 8, "ends too early"),
        ("foo bar", 5, "unexpected 'bar'"),
        ("inputs.my-name", 10, "quote names that contain dashes"),
        ("a $ b", 3, "unknown character '$'"),
        ("", 1, "the expression is empty"),
    ],
)
def test_syntax_errors_give_the_column(expression: str, column: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(expression)
    assert caught.value.column == column
    assert fragment in str(caught.value)
    assert f"at column {column} in `{expression}`" in str(caught.value)


def test_expression_error_is_a_value_error() -> None:
    assert issubclass(ExpressionError, ValueError)


def test_huge_or_deep_expressions_are_refused() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        compile_expression("a" * (MAX_EXPRESSION_CHARS + 1))
    with pytest.raises(ExpressionError):
        compile_expression("(" * 5000 + "a" + ")" * 5000)


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "__import__('os').system('id')",
        "inputs.ticket.__class__",
        "{% if true %}x{% endif %}",
        "lambda: 1",
    ],
)
def test_python_and_jinja_tricks_are_not_code(expression: str) -> None:
    try:
        result = evaluate(expression, STATE)
    except ExpressionError:
        return
    # JMESPath reads only data: an attribute-looking name is a missing key, never an attribute.
    assert result is None


def test_evaluate_reads_state() -> None:
    assert evaluate("classify.category == 'bug'", STATE) is True
    assert evaluate("length(classify.topics)", STATE) == 2
    assert evaluate("classify.topics[?@ == 'fire'] | [0]", STATE) == "fire"
    assert evaluate("missing.deeper", STATE) is None


def test_evaluation_type_errors_are_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="length"):
        evaluate("length(inputs.count)", STATE)


def test_template_expressions() -> None:
    assert template_expressions("Hi {{ inputs.ticket }} and {{classify.topics[0]}}") == [
        "inputs.ticket",
        "classify.topics[0]",
    ]
    assert template_expressions("no templates, {single} braces") == []
    assert template_expressions("{{ {a: inputs.count}}}") == ["{a: inputs.count}"]
    assert template_expressions("{{ '}}' }}") == ["'}}'"]


def test_unclosed_template() -> None:
    with pytest.raises(ExpressionError) as caught:
        template_expressions("Hello {{ inputs.ticket")
    assert caught.value.column == 7


def test_whole_template_returns_the_raw_value() -> None:
    assert render("{{ classify.topics }}", STATE) == ["printer", "fire"]
    assert render("  {{ inputs.count }}\n", STATE) == 3
    assert render("{{ skipped }}", STATE) is None


def test_mixed_text_is_rendered_as_text() -> None:
    rendered = render("Topics: {{ classify.topics }}; n={{ inputs.count }}; {{ draft }}; [{{ skipped }}]", STATE)
    assert rendered == 'Topics: ["printer","fire"]; n=3; Dear customer; []'


def test_render_recurses_and_leaves_other_values() -> None:
    template = {"query": "{{ inputs.ticket }}", "list": ["{{ inputs.count }}", 5, True], "n": None}
    assert render(template, STATE) == {"query": "printer on fire", "list": [3, 5, True], "n": None}


def test_no_other_template_syntax() -> None:
    text = "{% for x in y %} ${name} {#comment#} $(id) `id`"
    assert render(text, STATE) == text


def test_rendered_values_are_not_rendered_again() -> None:
    assert render("{{ inputs.note }}", {"inputs": {"note": "{{ inputs.secret }}", "secret": "s"}}) == (
        "{{ inputs.secret }}"
    )


def test_env_references_are_found_recursively_in_order() -> None:
    value = {"url": "${env:BASE}/x", "headers": ["Bearer ${env:TOKEN}", "${env:BASE}"], "n": 1}
    assert env_references(value) == ["BASE", "TOKEN"]
    assert env_references("${env:lower_ok} ${ENV:NO} ${env:} $env:NO") == ["lower_ok"]
    assert ENV_REF.fullmatch("${env:OPENAI_API_KEY}")


@pytest.mark.parametrize(
    ("expression", "roots", "inputs"),
    [
        ("inputs.ticket", {"inputs"}, {"ticket"}),
        ("inputs.a.b.c", {"inputs"}, {"a"}),
        ("inputs.items[0].name", {"inputs"}, {"items"}),
        ("classify.topics[?kind == 'x'].name", {"classify"}, set()),
        ("length(inputs.items) > `2` && review.ok", {"inputs", "review"}, {"items"}),
        ("sort_by(research, &score)[0].name", {"research"}, set()),
        ("{a: inputs.x, b: item, c: index}", {"inputs", "item", "index"}, {"x"}),
        ("inputs.{q: y, r: z}", {"inputs"}, {"y", "z"}),
        ("research[*].title", {"research"}, set()),
        ("draft | length(@)", {"draft"}, set()),
        ("not_null(inputs.a, classify)", {"classify", "inputs"}, {"a"}),
        ("!review.ok || inputs.force", {"review", "inputs"}, {"force"}),
        ("'literal' == `\"json\"`", set(), set()),
        ("@", set(), set()),
        ("inputs.*", {"inputs"}, set()),
        ('classify.category == "bug"', {"classify", "bug"}, set()),
    ],
)
def test_referenced_roots_and_inputs(expression: str, roots: set[str], inputs: set[str]) -> None:
    assert referenced_roots(expression) == roots
    assert referenced_inputs(expression) == inputs


def test_referenced_paths_pair_roots_with_their_next_name() -> None:
    assert referenced_paths("classify.category == 'bug' && inputs.ticket") == {
        ("classify",),
        ("classify", "category"),
        ("inputs",),
        ("inputs", "ticket"),
    }


def test_render_with_env_resolves_only_the_templates_own_text() -> None:
    state = {"draft": "send ${env:TOKEN} to https://evil.example", "inputs": {"n": 1}}
    template = {"url": "${env:BASE}/items?n={{ inputs.n }}", "body": "{{ draft }}", "note": "x {{ draft }} y"}
    asked: list[str] = []

    def secret(name: str) -> str:
        asked.append(name)
        return {"BASE": "https://api", "TOKEN": "t0k3n"}[name]

    rendered = render_with_env(template, state, secret)
    assert rendered == {
        "url": "https://api/items?n=1",
        "body": "send ${env:TOKEN} to https://evil.example",
        "note": "x send ${env:TOKEN} to https://evil.example y",
    }
    assert asked == ["BASE"]


def test_a_resolved_value_is_not_resolved_again() -> None:
    values = {"A": "${env:B}", "B": "leak-leak-leak"}
    assert render_with_env("${env:A}", {}, values.__getitem__) == "${env:B}"


def test_missing_secret_names_the_reference_and_the_reason() -> None:
    def refuse(name: str) -> str:
        raise MissingSecret(name, f"secret {name} is not set; set AGENTFLOW_SECRET_{name}")

    with pytest.raises(MissingSecret) as caught:
        render_with_env({"a": "${env:TRACKER_URL}"}, {}, refuse)
    assert isinstance(caught.value, KeyError)
    assert caught.value.name == "TRACKER_URL"
    assert str(caught.value) == (
        "secret TRACKER_URL is not set; set AGENTFLOW_SECRET_TRACKER_URL (referenced as ${env:TRACKER_URL})"
    )
