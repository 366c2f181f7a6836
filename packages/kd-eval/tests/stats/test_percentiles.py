import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
