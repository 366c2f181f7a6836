import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kd_eval.errors import MetricInputError
from kd_eval.stats.percentiles import percentile, summarize


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=300),
    q=st.sampled_from([0, 50, 95, 99, 100]),
)
def test_percentile_matches_numpy(samples, q):
    assert percentile(samples, q) == pytest.approx(np.percentile(samples, q), rel=1e-9, abs=1e-9)


def test_summary_of_a_thousand_samples_matches_numpy():
    samples = list(np.random.default_rng(0).lognormal(size=1000))
    s = summarize(samples)
    assert s.n == 1000
    assert [s.p50, s.p95, s.p99] == pytest.approx(np.percentile(samples, [50, 95, 99]).tolist())
    assert (s.min, s.max) == (min(samples), max(samples))
    assert s.mean == pytest.approx(np.mean(samples))


def test_percentile_of_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_percentile_outside_0_100_is_an_error():
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_percentiles_of_an_empty_list_are_refused():
    for empty in ([], (), np.array([])):
        with pytest.raises(MetricInputError, match="no samples"):
            percentile(empty, 50)
    with pytest.raises(MetricInputError, match="no samples"):
        summarize([])


def test_one_sample_is_every_percentile():
    s = summarize([4.0])
    assert (s.n, s.p50, s.p95, s.p99, s.mean, s.min, s.max) == (1, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_sample_is_refused_naming_it(bad):
    # sorted() leaves NaN where it is, so a p50 over it would be any value at all
    with pytest.raises(MetricInputError, match=f"sample 1 is {bad}"):
        percentile([1.0, bad, 3.0], 50)


def test_a_nan_q_is_refused():
    with pytest.raises(MetricInputError, match="q must be in"):
        percentile([1.0], float("nan"))
