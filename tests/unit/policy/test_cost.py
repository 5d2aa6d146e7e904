from __future__ import annotations

import pytest

from feedbackloop.config import Settings
from feedbackloop.ingestion import validation
from feedbackloop.policy import cost
from feedbackloop.policy.celcheck import check_condition
from feedbackloop.policy.celparse import MAX_NESTING, ParseError, parse
from feedbackloop.policy.cost import (
    EXPRESSION_COST_LIMIT,
    MAX_EXPRESSION_CHARS,
    CostError,
    cost_problem,
    estimate_cost,
    regex_weight,
)


def ints(n: int) -> str:
    return "[" + ",".join(str(i) for i in range(n)) + "]"


# (expression, exact estimate): a change to the model shows up here as a diff to review.
EXACT = [
    ("true", 1),
    ("1 + 2 == 3", 7),
    ('feedback.thumb == "down"', 8),
    ("session.negative_count > 2", 7),
    # 16 categories of at most 128 characters: the list is copied, then compared per element.
    ('"unsafe" in feedback.categories', 117),
    # 32,000 characters of up to 4 bytes: copied and scanned at 128 bytes a unit.
    ('feedback.comment.contains("refund")', 2007),
    # One lookup copies the 64 attributes, which together fit one 4 MiB message.
    ('feedback.attributes["team"] == "a"', 33_906),
    (ints(3), 4),
    # The literal (301), then per element: the step, binding x, and the body (8 each).
    (ints(300) + ".all(x, x >= 0)", 2701),
]


@pytest.mark.parametrize(("expression", "expected"), EXACT, ids=[e[:40] for e, _ in EXACT])
def test_exact_estimates(expression: str, expected: int) -> None:
    assert estimate_cost(expression) == expected


def test_literal_list_sizes_scale_a_comprehension_linearly() -> None:
    small, large = (estimate_cost(ints(n) + ".exists(x, x == 7)") for n in (100, 200))
    # Each element costs the same per step; the literal itself is one per element.
    assert large - small == estimate_cost(ints(200) + ".exists(x, x == 7)") - small
    assert 1.9 < large / small < 2.1


def test_nesting_multiplies_sizes() -> None:
    one = estimate_cost(ints(50) + ".all(x, x >= 0)")
    two = estimate_cost(f"{ints(50)}.all(x, {ints(50)}.all(y, x + y >= 0))")
    three = estimate_cost(f"{ints(50)}.all(x, {ints(50)}.all(y, {ints(50)}.all(z, x + y + z >= 0)))")
    # Each level multiplies by the 50 elements, plus building the inner literal per step.
    assert 50 * one < two < 80 * one
    assert 50 * two < three < 80 * two


def test_the_cubic_condition_is_refused_and_one_level_less_is_not() -> None:
    cubic = f"{ints(300)}.all(x, {ints(300)}.all(y, {ints(300)}.all(z, x + y + z >= 0)))"
    estimate, problem = cost_problem(cubic)
    assert estimate == 405_361_201
    assert problem == (
        "estimated cost 405,361,201 exceeds the per-expression limit of 100,000 (comprehensions "
        "multiply by the sizes they iterate; event fields count at their ingestion maxima)"
    )
    assert cost_problem(f"{ints(90)}.all(x, {ints(90)}.all(y, x + y >= 0))")[1] is None


def test_map_and_filter_copy_their_result_on_every_step() -> None:
    exists = estimate_cost(ints(200) + ".exists(x, x == 1)")
    mapped = estimate_cost(ints(200) + ".map(x, x).size() > 0")
    filtered = estimate_cost(ints(200) + ".filter(x, x > 1).size() > 0")
    assert mapped > 200 * 200 > exists
    assert filtered > 200 * 200


@pytest.mark.parametrize(
    ("field", "items"),
    [
        ("feedback.categories", validation.MAX_CATEGORIES),
        ("feedback.signals", 16),
        ("interaction.input_messages", validation.MAX_MESSAGES),
        ("interaction.context_documents", validation.MAX_DOCUMENTS),
        ("feedback.attributes", 64),
        ("interaction.attributes", 64),
    ],
)
def test_event_fields_iterate_at_their_ingestion_maxima(field: str, items: int) -> None:
    base = estimate_cost(f"{field}.exists(x, true)")
    heavier = estimate_cost(f"{field}.exists(x, true && true && true)")
    # Two more `&&` nodes and one more literal... per iteration: three units times the maximum.
    assert heavier - base == 4 * items


@pytest.mark.parametrize(
    ("text_field", "chars"),
    [
        ("feedback.comment", 32_000),
        ("feedback.correction", 32_000),
        ("interaction.response", 32_000),
        ("feedback.user_id", validation.MAX_ID_CHARS),
        ("interaction.prompt_name", validation.MAX_NAME_CHARS),
    ],
)
def test_string_operations_cost_the_length_of_what_they_scan(text_field: str, chars: int) -> None:
    compare = estimate_cost(f'{text_field} == ""')
    scan = estimate_cost(f'{text_field}.startsWith("a")')
    # The scan reads every byte of the field (at most 4 a character), 128 bytes a unit.
    assert scan - compare == chars * 4 // 128
    assert estimate_cost(f'{text_field}.matches("ab")') > estimate_cost(f'{text_field}.matches("a")')


@pytest.mark.parametrize(
    ("pattern", "weight"),
    [
        ("a", 1),
        ("abc", 3),
        ("a+b*", 4),
        (r"\d\d", 4),
        ("[a-z]+", 2),
        ("(ab)+", 4),
        ("a{100}", 100),
        ("[0-9]{3}-[0-9]{4}", 8),
        ("(a{10}){10}", 110),
    ],
)
def test_regex_weight_expands_counted_repetitions(pattern: str, weight: int) -> None:
    assert regex_weight(pattern) == weight


def test_a_regex_built_from_event_data_costs_its_longest_text() -> None:
    problem = cost_problem("feedback.comment.matches(feedback.correction)")[1]
    assert problem is not None and problem.startswith("estimated cost ")


def test_a_long_expression_is_refused_before_compiling() -> None:
    source = " || ".join(f'feedback.thumb == "t{i}"' for i in range(400))
    assert len(source) > MAX_EXPRESSION_CHARS
    checked = check_condition(source)
    assert checked.program is None
    assert checked.problems == [f"expression is {len(source):,} characters long; the limit is 4,096"]


def test_deep_nesting_is_a_parse_error_not_a_recursion_error() -> None:
    with pytest.raises(ParseError, match=f"nests more than {MAX_NESTING} levels"):
        parse("(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1))
    parse("(" * (MAX_NESTING - 1) + "1" + ")" * (MAX_NESTING - 1))
    assert cost_problem("[" * 40 + "]" * 40 + " == []")[1] == (
        "cannot bound the cost of this expression: expression nests more than 32 levels deep"
    )
    with pytest.raises(CostError):
        estimate_cost("a ? b : " * 40 + "c")


@pytest.mark.parametrize(
    "source",
    [
        'has(feedback.comment) && feedback.comment != ""',
        "size(feedback.categories) > 1 ? feedback.rating < 3 : false",
        '{"a": 1, "b": 2}["a"] == 1',
        "-feedback.rating < 0 && !feedback.negative",
        'r"raw\\d" != b"bytes" && 0x1F == 31 && 1u == 1u && 2.5e1 > .5',
        'feedback.categories.map(c, c + "!").exists(c, c == "x!")',
        "// a comment\ntrue",
        'duration("1h") > duration("1m") && timestamp("2024-01-01T00:00:00Z").getFullYear() == 2024',
        "[1, 2, 3,].size() == 3",
    ],
)
def test_the_parser_reads_cel_that_cel_accepts(source: str) -> None:
    checked = check_condition(source)
    assert checked.problems == [] and 0 < checked.cost < EXPRESSION_COST_LIMIT


def test_every_example_and_fixture_condition_passes_with_a_wide_margin() -> None:
    from pathlib import Path

    from feedbackloop.policy.loader import load_path

    root = Path(__file__).resolve().parents[3]
    conditions: list[str] = []
    for folder in (root / "policies", root / "tests" / "testdata" / "policies"):
        docs, _ = load_path(folder)
        conditions += [
            d.data["spec"]["when"]
            for d in docs
            if isinstance(d.data, dict)
            and d.data.get("kind") == "RoutingPolicy"
            and isinstance((d.data.get("spec") or {}).get("when"), str)
            and "cost" not in d.file
        ]
    assert len(conditions) >= 5
    checked = 0
    for source in conditions:
        result = check_condition(source)
        assert not any(p.startswith("estimated cost") for p in result.problems), source
        if not result.problems:  # fixtures for other errors (syntax, unknown fields) aside
            assert result.cost * 20 < EXPRESSION_COST_LIMIT, source
            checked += 1
    assert checked >= 5


def test_the_assumed_limits_are_ingestions() -> None:
    assert cost.MAX_CATEGORIES == validation.MAX_CATEGORIES
    assert cost.MAX_MESSAGES == validation.MAX_MESSAGES
    assert cost.MAX_DOCUMENTS == validation.MAX_DOCUMENTS
    assert cost.MAX_ID_CHARS == validation.MAX_ID_CHARS
    assert cost.MAX_NAME_CHARS == validation.MAX_NAME_CHARS
    fields = Settings.model_fields
    assert fields["max_text_chars"].default == cost.MAX_TEXT_CHARS
    assert fields["max_attributes"].default == cost.MAX_ATTRIBUTES
    assert fields["max_message_bytes"].default == cost.MAX_MESSAGE_BYTES
