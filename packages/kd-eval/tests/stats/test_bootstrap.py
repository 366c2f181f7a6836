import numpy as np
import pytest
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
