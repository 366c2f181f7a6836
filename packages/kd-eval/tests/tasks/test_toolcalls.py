import pytest
from kd_eval.errors import MetricInputError
from kd_eval.tasks.toolcalls import (
    ToolCall,
    ToolCallScore,
    aggregate_tool_scores,
    argument_f1,
    normalize_value,
    parse_tool_call,
    score_tool_call,
)

REFERENCE = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"})


def test_one_wrong_argument_halves_strict_precision_and_recall():
    out = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "fahrenheit"}}'
    score = score_tool_call(out, REFERENCE)
    assert (score.valid_json, score.name_correct) == (True, True)
    assert score.args_f1_strict == pytest.approx(0.5)
    assert score.args_f1_lax == pytest.approx(0.5)


def test_lax_matching_forgives_case_spacing_and_number_strings():
    predicted = {"city": "  paris ", "days": "3", "metric": "TRUE"}
    reference = {"city": "Paris", "days": 3, "metric": True}
    assert argument_f1(predicted, reference, lax=False) == 0.0
    assert argument_f1(predicted, reference, lax=True) == 1.0


def test_an_extra_argument_lowers_precision_only():
    # P = 2/3, R = 1 -> F1 = 0.8
    assert argument_f1({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}, lax=False) == pytest.approx(0.8)


def test_no_arguments_on_either_side_is_a_perfect_match():
    assert argument_f1({}, {}, lax=False) == 1.0


def test_tool_call_inside_text_is_found():
    text = 'Sure! {"oops"} then {"name": "f", "arguments": {"x": [1, 2]}} and more'
    assert parse_tool_call(text) == ToolCall("f", {"x": [1, 2]})


def test_openai_style_string_arguments_are_decoded():
    assert parse_tool_call('{"name": "f", "arguments": "{\\"x\\": 1}"}') == ToolCall("f", {"x": 1})


@pytest.mark.parametrize(
    "text", ["no json here", '{"name": "f", "arguments": {"x": 1}', '{"name": 3}', "[1, 2]"]
)
def test_output_that_is_not_a_tool_call_scores_invalid(text):
    score = score_tool_call(text, REFERENCE)
    assert score == ToolCallScore(False, False, 0.0, 0.0, None)


def test_wrong_tool_name_is_counted():
    score = score_tool_call('{"name": "get_time", "arguments": {"city": "Paris"}}', REFERENCE)
    assert not score.name_correct


def test_fixture_hit_needs_the_exact_recorded_call():
    fixtures = {REFERENCE.key(): {"temp": 21}}
    hit = score_tool_call(
        '{"arguments": {"unit": "celsius", "city": "Paris"}, "name": "get_weather"}',
        REFERENCE,
        fixtures,
    )
    miss = score_tool_call(
        '{"name": "get_weather", "arguments": {"city": "Rome"}}', REFERENCE, fixtures
    )
    assert (hit.fixture_hit, miss.fixture_hit) == (True, False)


def test_aggregate_rates_over_examples():
    scores = [
        ToolCallScore(True, True, 1.0, 1.0, True),
        ToolCallScore(True, False, 0.5, 1.0, False),
        ToolCallScore(False, False, 0.0, 0.0, False),
        ToolCallScore(True, True, 0.5, 0.5, True),
    ]
    agg = aggregate_tool_scores(scores)
    assert agg["json_validity"] == 0.75
    assert agg["tool_name_accuracy"] == 0.5
    assert agg["args_f1_strict"] == 0.5
    assert agg["args_f1_lax"] == 0.625
    assert agg["fixture_hit_rate"] == 0.5


def test_without_fixtures_the_hit_rate_is_none():
    assert (
        aggregate_tool_scores([ToolCallScore(True, True, 1, 1, None)])["fixture_hit_rate"] is None
    )


def test_nested_values_are_normalised_recursively():
    assert normalize_value({"A": [" X ", "2"]}) == {"a": ["x", 2.0]}


# -- degenerate inputs -------------------------------------------------------------------


@pytest.mark.parametrize("lax", [False, True])
@pytest.mark.parametrize(
    ("predicted", "reference", "f1"),
    [
        ({}, {}, 1.0),  # nothing asked, nothing added
        ({}, {"city": "Paris"}, 0.0),  # empty prediction
        ({"city": "Paris"}, {}, 0.0),  # arguments the reference does not have
        ({"x": float("nan")}, {"x": float("nan")}, 1.0),  # NaN is written NaN on both sides
    ],
)
def test_empty_and_nan_arguments_have_defined_f1(predicted, reference, f1, lax):
    assert argument_f1(predicted, reference, lax=lax) == f1


def test_lax_matching_takes_negative_zero_for_zero():
    assert argument_f1({"x": -0.0}, {"x": 0}, lax=True) == 1.0
    assert argument_f1({"x": "-0"}, {"x": 0.0}, lax=True) == 1.0
    assert argument_f1({"x": -0.0}, {"x": 0}, lax=False) == 0.0


def test_a_call_with_no_arguments_against_a_reference_with_none_scores_one():
    score = score_tool_call('{"name": "ping", "arguments": {}}', ToolCall("ping", {}))
    assert (score.valid_json, score.name_correct, score.args_f1_strict, score.args_f1_lax) == (
        True,
        True,
        1.0,
        1.0,
    )


@pytest.mark.parametrize("output", ["", "   ", "{}", "[]", "null"])
def test_an_empty_or_callless_output_is_invalid_with_f1_zero(output):
    score = score_tool_call(output, ToolCall("ping", {}))
    assert (score.valid_json, score.name_correct, score.args_f1_strict) == (False, False, 0.0)


def test_aggregating_no_examples_is_refused():
    with pytest.raises(MetricInputError, match="zero examples"):
        aggregate_tool_scores([])


def test_fixture_hit_rate_is_none_when_nothing_was_replayed():
    scores = [ToolCallScore(True, True, 1.0, 1.0, None)]
    assert aggregate_tool_scores(scores)["fixture_hit_rate"] is None
