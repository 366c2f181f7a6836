import numpy as np
import pytest
from kd_eval.errors import MetricInputError
from kd_eval.stats.bootstrap import bootstrap_mean


def test_point_estimate_is_the_weighted_mean():
    assert bootstrap_mean([1.0, 2.0, 4.0], [1, 1, 2]).value == pytest.approx(11 / 4)


def test_interval_equals_a_hand_written_numpy_bootstrap():
    values = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3])
    est = bootstrap_mean(values, resamples=300, seed=7, confidence=0.9)
    idx = np.random.default_rng(7).integers(0, 6, size=(300, 6))
    means = values[idx].mean(axis=1)
    assert est.low == pytest.approx(np.quantile(means, 0.05))
    assert est.high == pytest.approx(np.quantile(means, 0.95))


def test_same_seed_gives_the_same_interval_and_another_seed_a_different_one():
    values = list(np.linspace(0, 1, 20) ** 2)
    a, b = bootstrap_mean(values, seed=1), bootstrap_mean(values, seed=1)
    c = bootstrap_mean(values, seed=2)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_one_example_collapses_the_interval_to_the_value():
    est = bootstrap_mean([0.3])
    assert est.low == est.high == est.value == 0.3


def test_records_how_it_was_computed():
    est = bootstrap_mean([1.0, 2.0], resamples=50, seed=3, confidence=0.8)
    assert (est.resamples, est.seed, est.confidence) == (50, 3, 0.8)


def test_map_applies_a_monotone_function_to_all_three_figures():
    est = bootstrap_mean([0.0, 1.0], resamples=100).map(np.exp)
    assert est.value == pytest.approx(np.exp(0.5))
    assert est.low <= est.value <= est.high


@pytest.mark.parametrize(
    ("values", "kwargs"), [([], {}), ([1.0], {"confidence": 1.0}), ([1.0, 2.0], {"weights": [1]})]
)
def test_invalid_input_is_rejected(values, kwargs):
    with pytest.raises(ValueError):  # noqa: PT011
        bootstrap_mean(values, **kwargs)


# -- degenerate inputs: each has a defined result or a MetricInputError ------------------


def test_no_sample_is_refused_as_a_metric_input_error():
    with pytest.raises(MetricInputError, match="length >= 1"):
        bootstrap_mean([])


def test_one_sample_collapses_the_interval_onto_it():
    est = bootstrap_mean([0.7], resamples=50)
    assert (est.value, est.low, est.high) == (0.7, 0.7, 0.7)


def test_one_weighted_sample_is_its_value():
    est = bootstrap_mean([2.5], weights=[40])
    assert (est.value, est.low, est.high) == (2.5, 2.5, 2.5)


@pytest.mark.parametrize(
    ("values", "weights", "message"),
    [
        ([1.0, float("nan")], None, "value 1 is nan"),
        ([1.0, float("inf")], None, "value 1 is inf"),
        ([1.0, 2.0], [1.0, float("nan")], "weight 1 is nan"),
        ([1.0, 2.0], [0, 0], "not all 0"),  # e.g. a perplexity over zero tokens
        ([1.0, 2.0], [2, -1], "must be >= 0"),
    ],
)
def test_non_finite_values_and_empty_weights_are_refused(values, weights, message):
    with pytest.raises(MetricInputError, match=message):
        bootstrap_mean(values, weights)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"resamples": 0}, "resamples must be >= 1"),
    ({"confidence": float("nan")}, "confidence must be in"),
])  # fmt: skip
def test_settings_without_an_interval_are_refused(kwargs, message):
    with pytest.raises(MetricInputError, match=message):
        bootstrap_mean([1.0, 2.0], **kwargs)


def test_some_zero_weights_are_allowed_and_resamples_of_only_those_count_as_zero():
    est = bootstrap_mean([5.0, 1.0], weights=[0, 1], resamples=200, seed=0)
    assert est.value == 1.0
    assert est.low == 0.0  # a resample drawing only the zero-weight example counts as 0
