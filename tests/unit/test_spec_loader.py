"""The safe YAML loader: plain data, positions, and refusal of hostile documents."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from agentflow.spec import loader
from agentflow.spec.errors import SpecError, SpecErrors
from agentflow.spec.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_yaml, resolve_scalar

CANARY = Path("/tmp/agentflow-canary-loader")


def errors_of(source: str | bytes, **options: int) -> list[SpecError]:
    with pytest.raises(SpecErrors) as caught:
        load_yaml(source, "flow.yaml", **options)
    return caught.value.errors


def only_error(source: str | bytes, **options: int) -> SpecError:
    errors = errors_of(source, **options)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("Y", "Y"),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("42", 42),
        ("-7", -7),
        ("0x1F", 31),
        ("0o17", 15),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("1.10", 1.1),
        ("1_000", "1_000"),
        ("2024-01-01", "2024-01-01"),
        ("12:30", "12:30"),
        ("0b101", "0b101"),
        ("hello world", "hello world"),
    ],
)
def test_plain_scalars_follow_yaml_1_2_core_schema(text: str, value: object) -> None:
    assert resolve_scalar(text) == value
    assert type(resolve_scalar(text)) is type(value)


def test_special_floats() -> None:
    assert resolve_scalar(".inf") == math.inf
    assert resolve_scalar("-.Inf") == -math.inf
    assert math.isnan(resolve_scalar(".nan"))


def test_document_becomes_plain_data() -> None:
    source = "on: off\nenabled: yes\ncount: 3\nquoted: '3'\nitems: [a, {b: null}]\ntext: !!str 12\nweird: ! 12\n"
    assert load_yaml(source).data == {
        "on": "off",
        "enabled": "yes",
        "count": 3,
        "quoted": "3",
        "items": ["a", {"b": None}],
        "text": "12",
        "weird": "12",
    }


def test_keys_are_their_source_text() -> None:
    assert load_yaml("1: a\ntrue: b\nnull: c\n").data == {"1": "a", "true": "b", "null": "c"}


def test_core_tags_are_checked() -> None:
    assert load_yaml("a: !!int '12'\nb: !!float 3\nc: !!bool 'true'\nd: !!null ''\n").data == {
        "a": 12,
        "b": 3.0,
        "c": True,
        "d": None,
    }
    error = only_error("a: 1\nb: !!int twelve\n")
    assert (error.line, error.column) == (2, 4)
    assert "'twelve' is not a valid int" in error.message


def test_positions_point_at_keys_and_items() -> None:
    source = "spec:\n  nodes:\n    classify:\n      type: llm\n  list:\n    - a\n    - {b: 1}\n"
    positions = load_yaml(source).positions
    assert positions[()] == (1, 1)
    assert positions[("spec",)] == (1, 1)
    assert positions[("spec", "nodes", "classify")] == (3, 5)
    assert positions[("spec", "nodes", "classify", "type")] == (4, 7)
    assert positions[("spec", "list", 0)] == (6, 7)
    assert positions[("spec", "list", 1)] == (7, 7)
    assert positions[("spec", "list", 1, "b")] == (7, 8)


def test_position_falls_back_to_nearest_ancestor() -> None:
    document = load_yaml("a:\n  b: 1\n")
    assert document.position(("a", "b", "missing", 3)) == (2, 3)
    assert document.position(("nothing",)) == (1, 1)


def test_columns_count_characters_not_bytes() -> None:
    assert load_yaml("ééé: {k: 1}\n").positions[("ééé", "k")] == (1, 7)


def test_merge_keys_explicit_keys_win_and_positions_point_at_the_merge() -> None:
    source = "base: &base {model: a, temperature: 0.2}\nnode:\n  <<: *base\n  model: b\n"
    document = load_yaml(source)
    assert document.data["node"] == {"model": "b", "temperature": 0.2}
    assert document.positions[("node", "temperature")] == (3, 3)
    assert document.positions[("node", "model")] == (4, 3)


def test_merge_of_several_mappings_earlier_wins() -> None:
    source = "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n"
    assert load_yaml(source).data["c"] == {"x": 1, "y": 2}


def test_merge_needs_mappings() -> None:
    error = only_error("a: &a [1]\nb:\n  <<: *a\n")
    assert (error.line, error.column) == (3, 7)
    assert error.message == "the merge key << takes a mapping or a list of mappings, e.g. `<<: *defaults`"


def test_quoted_merge_key_is_an_ordinary_key() -> None:
    assert load_yaml("'<<': 1\n").data == {"<<": 1}


def test_aliases_are_independent_copies() -> None:
    data = load_yaml("a: &a {x: [1]}\nb: *a\n").data
    data["b"]["x"].append(2)
    assert data["a"] == {"x": [1]}


def test_duplicate_keys_name_both_lines() -> None:
    errors = errors_of("name: a\nother: 1\nname: b\nnested: {k: 1, k: 2}\n")
    assert [(error.line, error.column) for error in errors] == [(3, 1), (4, 16)]
    assert errors[0].message.startswith("duplicate key 'name' (first at line 1)")
    assert "duplicate key 'k' (first at line 4)" in errors[1].message


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system",
        "!!python/object/new:os.system",
        "!!python/name:os.system",
        "!!python/tuple",
        "!foo",
        "!!binary",
        "!!timestamp",
        "!!set",
        "!<tag:yaml.org,2002:python/object/apply:os.system>",
    ],
)
def test_tags_are_refused_and_never_run(tag: str) -> None:
    CANARY.unlink(missing_ok=True)
    source = f'a: 1\nb: {tag} ["touch {CANARY}"]\n'
    error = only_error(source)
    assert (error.line, error.column) == (2, 4)
    assert "tags are not allowed; workflows are data" in error.message
    assert not CANARY.exists()


def test_every_bad_tag_is_reported() -> None:
    errors = errors_of("a: !x 1\nb: !y {c: !z 2}\n")
    assert [error.line for error in errors] == [1, 2, 2]


def test_collection_keys_are_refused() -> None:
    error = only_error("? [a, b]\n: 1\n")
    assert "mapping keys must be plain strings" in error.message


def test_alias_bomb_fails_fast_with_little_memory() -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, current in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{current}: &{current} [{', '.join([f'*{previous}'] * 9)}]")
    tracemalloc.start()
    try:
        error = only_error("\n".join(lines) + "\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "alias expansion exceeds 100000 values: a YAML alias bomb?" in error.message
    assert error.line == 6
    assert peak < 50 * 1024 * 1024


def test_many_values_without_aliases_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_NODES == 100_000
    monkeypatch.setattr(loader, "MAX_NODES", 1000)
    assert load_yaml("[" + "0, " * 998 + "0]").data == [0] * 999
    error = only_error("[" + "0, " * 999 + "0]")
    assert "more than 1000 values" in error.message


class ShallowLoader(yaml.SafeLoader):
    """The pure-Python parser with a nesting limit below ours, in the way libyaml refuses deep documents."""

    LIMIT = 8

    def refuse(self, context: str) -> None:
        mark = self.get_mark()
        raise yaml.scanner.ScannerError(context, mark, "exceeded maximum nesting depth", mark)

    def fetch_flow_collection_start(self, TokenClass: type) -> None:
        if self.flow_level >= self.LIMIT:
            self.refuse("while increasing flow level")
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= self.LIMIT:
            self.refuse("while increasing block level")
        return super().add_indent(column)


PARSERS = {
    "default": loader._PARSERS,
    "pure-python": (yaml.SafeLoader,),
    "lower-limit-first": (ShallowLoader, yaml.SafeLoader),
    "every-parser-refuses": (ShallowLoader,),
}
DEEP = {
    "flow-lists": lambda depth: "[" * depth + "]" * depth,
    "flow-maps": lambda depth: "{a: " * depth + "1" + "}" * depth,
    "block-lists": lambda depth: "- " * depth + "x",
    # Block mappings need one more space per level, so 5,000 levels would pass the size cap first.
    "block-maps": lambda depth: "".join(f"{' ' * level}k:\n" for level in range(depth // 5)),
}


@pytest.fixture(params=list(PARSERS))
def parsers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Whatever PyYAML's parsers do about depth (a limit above ours, below ours, none), ours must win."""
    monkeypatch.setattr(loader, "_PARSERS", PARSERS[request.param])
    return str(request.param)


@pytest.mark.parametrize("make", DEEP.values(), ids=list(DEEP))
def test_deep_nesting_is_refused_with_our_limit_and_fix(parsers: str, make: Callable[[int], str]) -> None:
    error = only_error(make(5000))
    assert error.message == (
        f"nesting is deeper than {MAX_DEPTH} levels; flatten the structure: "
        "use fewer lists and mappings inside one another"
    )


@pytest.mark.parametrize("parsers", ["default", "pure-python"], indirect=True)
def test_deep_flow_lists_stop_at_the_first_level_past_the_limit(parsers: str) -> None:
    error = only_error("[" * 5000 + "]" * 5000)
    assert (error.line, error.column) == (1, MAX_DEPTH + 1)


@pytest.mark.parametrize("parsers", ["default", "pure-python", "lower-limit-first"], indirect=True)
def test_nesting_up_to_the_limit_is_fine(parsers: str) -> None:
    data = load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH).data
    for _ in range(MAX_DEPTH - 1):
        data = data[0]
    assert data == []
    assert "deeper" in only_error("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).message


@pytest.mark.parametrize("parsers", ["lower-limit-first"], indirect=True)
def test_a_parser_with_a_lower_limit_keeps_earlier_errors_once(parsers: str) -> None:
    errors = errors_of("a: 1\na: 2\nb: " + "[" * 20 + "]" * 20 + "\n")
    assert [(error.line, error.column) for error in errors] == [(2, 1)]
    assert errors[0].message.startswith("duplicate key 'a' (first at line 1)")


def test_alias_expansion_counts_toward_depth() -> None:
    nested = "[" * 40 + "]" * 40
    error = only_error(f"a: &a {nested}\nb: {'[' * 30}*a{']' * 30}\n")
    assert error.line == 2
    assert "deeper" in error.message


def test_oversized_input_is_refused_before_parsing() -> None:
    huge = "a: [" + "1, " * (MAX_FILE_BYTES // 3) + "]\n"
    for source in (huge, huge.encode()):
        error = only_error(source)
        assert (error.line, error.column) == (1, 1)
        assert f"larger than {MAX_FILE_BYTES} bytes" in error.message


def test_size_counts_bytes_not_characters() -> None:
    assert "larger than 10 bytes" in only_error("a: ééééé", max_bytes=10).message
    assert load_yaml("a: éé", max_bytes=10).data == {"a": "éé"}


@pytest.mark.parametrize("source", ["", "   \n", "# only a comment\n"])
def test_empty_file(source: str) -> None:
    error = only_error(source)
    assert (error.line, error.column) == (1, 1)
    assert "the file is empty" in error.message


def test_several_documents_are_refused() -> None:
    error = only_error("a: 1\n---\nb: 2\n")
    assert error.line == 2
    assert "exactly one" in error.message


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3, "did not find expected ',' or ']'"),
        ("a: 1\nb: c: d\n", 2, "mapping values are not allowed"),
        ("a:\n\t- b\n", 2, "indent with spaces, not tabs"),
        ('a: "unterminated\n', 2, "YAML syntax error"),
    ],
)
def test_syntax_errors_are_located(source: str, line: int, fragment: str) -> None:
    error = only_error(source)
    assert error.line == line
    assert fragment in error.message


def test_syntax_error_keeps_earlier_errors() -> None:
    errors = errors_of("a: 1\na: 2\nb: [\n")
    assert [error.line for error in errors] == [2, 4]


def test_undefined_and_recursive_aliases() -> None:
    assert "has no anchor &missing" in only_error("a: *missing\n").message
    assert "recursive data is not allowed" in only_error("a: &a [*a]\n").message


def test_bytes_are_decoded_as_utf8() -> None:
    assert load_yaml("a: é\n".encode()).data == {"a": "é"}
    assert load_yaml(b"\xef\xbb\xbfa: 1\n").data == {"a": 1}
    error = only_error(b"a: 1\nb: \xff\n")
    assert (error.line, error.column) == (2, 4)
    assert "not UTF-8" in error.message


def test_control_characters_are_located() -> None:
    error = only_error("a: 1\nb: x\x00\n")
    assert (error.line, error.column) == (2, 5)
    assert "U+0000" in error.message


def test_a_flood_of_problems_stops_after_fifty() -> None:
    from agentflow.spec.loader import MAX_ERRORS

    with pytest.raises(SpecErrors) as caught:
        load_yaml("a: 1\n" * 1000, "flood.yaml")
    errors = caught.value.errors
    assert len(errors) == MAX_ERRORS + 1
    assert errors[0].message == "duplicate key 'a' (first at line 1); each key may appear once"
    assert errors[-1].message == f"stopped after {MAX_ERRORS} problems; fix those first and validate again"
