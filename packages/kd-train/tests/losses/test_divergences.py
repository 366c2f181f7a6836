"""Divergences against float64 reference formulas written out here, term by term."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kd_train.losses import Divergence, LossArgumentError, jsd, log_probs, tvd
from kd_train.losses.divergences import DIVERGENCES


def ref(
    name: str, s_logits: torch.Tensor, t_logits: torch.Tensor, beta: float = 0.5, skew: float = 0.1
) -> torch.Tensor:
    """Straightforward float64 formulas, 0·log 0 = 0; log-probs kept for the plain KLs."""
    lq = torch.log_softmax(s_logits.double(), -1)
    lp = torch.log_softmax(t_logits.double(), -1)
    q, p = lq.exp(), lp.exp()

    def kl(a: torch.Tensor, la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (la - lb), torch.zeros_like(a)).sum(-1)

    def kl_mix(a: torch.Tensor, la: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return kl(a, la, torch.log(m))

    if name == "forward_kl" or (name == "jsd" and beta == 0):
        return kl(p, lp, lq)
    if name == "reverse_kl" or (name == "jsd" and beta == 1):
        return kl(q, lq, lp)
    if name == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * kl_mix(p, lp, m) + (1 - beta) * kl_mix(q, lq, m)
    if name == "skew_forward_kl":
        return kl_mix(p, lp, skew * p + (1 - skew) * q)
    if name == "skew_reverse_kl":
        return kl_mix(q, lq, skew * q + (1 - skew) * p)
    return 0.5 * (p - q).abs().sum(-1)


def ours(
    name: str, s_logits: torch.Tensor, t_logits: torch.Tensor, beta: float = 0.5, skew: float = 0.1
) -> torch.Tensor:
    return Divergence(name, beta=beta, skew=skew)(log_probs(s_logits), log_probs(t_logits))


@pytest.mark.parametrize("name", DIVERGENCES)
def test_matches_reference_on_random_logits(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, 50, generator=g) * 3, torch.randn(4, 3, 50, generator=g) * 3
    torch.testing.assert_close(ours(name, s, t).double(), ref(name, s, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_matches_reference_on_extreme_logits(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(6, 20, generator=g, dtype=torch.float64) * 1e4
    t = torch.randn(6, 20, generator=g, dtype=torch.float64) * 1e4
    t[:, :2] = s[:, :2]  # some shared argmaxes keep divergences finite
    expected = ref(name, s, t)
    got = ours(name, s, t)
    finite = expected.isfinite()
    assert torch.equal(got.isfinite(), finite)
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_float32_extreme_logits_stay_finite_where_reference_is(name: str) -> None:
    s = torch.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4]])
    t = torch.tensor([[1e4 - 1.0, -1e4, 1.0], [1.0, 1e4, -1e4]])
    expected = ref(name, s, t)
    torch.testing.assert_close(ours(name, s, t).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_neg_inf_logits_in_both_count_as_zero_probability(name: str) -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(5, 12, dtype=torch.float64, generator=g)
    t = torch.randn(5, 12, dtype=torch.float64, generator=g)
    s[:, -3:] = -math.inf
    t[:, -3:] = -math.inf
    s.requires_grad_(True)
    value = ours(name, s, t)
    torch.testing.assert_close(value, ref(name, s.detach(), t))
    value.sum().backward()
    assert s.grad is not None
    assert bool(s.grad.isfinite().all())


@pytest.mark.parametrize("name", ["forward_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd"])
def test_teacher_only_neg_inf_is_finite_for_bounded_directions(name: str) -> None:
    s = torch.randn(3, 8, dtype=torch.float64)
    t = torch.randn(3, 8, dtype=torch.float64)
    t[:, 0] = -math.inf
    got = ours(name, s, t)
    assert bool(got.isfinite().all())
    torch.testing.assert_close(got, ref(name, s, t))


def test_reverse_kl_is_infinite_when_student_covers_a_token_the_teacher_excludes() -> None:
    t = torch.tensor([[0.0, -math.inf]])
    assert math.isinf(float(ours("reverse_kl", torch.zeros(1, 2), t)))


@pytest.mark.parametrize("name", DIVERGENCES)
def test_bf16_inputs_are_computed_in_float32(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 64, generator=g), torch.randn(4, 64, generator=g)
    sb, tb = s.bfloat16(), t.bfloat16()
    got = ours(name, sb, tb)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), ref(name, sb.double(), tb.double()), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(("beta", "name"), [(0.0, "forward_kl"), (1.0, "reverse_kl")])
def test_jsd_endpoints_are_exactly_forward_and_reverse_kl(beta: float, name: str) -> None:
    s, t = log_probs(torch.randn(7, 30)), log_probs(torch.randn(7, 30))
    assert torch.equal(jsd(s, t, beta), Divergence(name)(s, t))


@pytest.mark.parametrize("name", ["skew_forward_kl", "skew_reverse_kl"])
@pytest.mark.parametrize("skew", [0.0, 1.0])
def test_skew_endpoints_match_reference(name: str, skew: float) -> None:
    s, t = torch.randn(3, 9, dtype=torch.float64), torch.randn(3, 9, dtype=torch.float64)
    torch.testing.assert_close(ours(name, s, t, skew=skew), ref(name, s, t, skew=skew))


@pytest.mark.parametrize("name", DIVERGENCES)
def test_gradcheck_float64(name: str) -> None:
    g = torch.Generator().manual_seed(4)
    s = torch.randn(3, 7, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(3, 7, dtype=torch.float64, generator=g, requires_grad=True)
    d = Divergence(name, beta=0.3, skew=0.2)
    assert torch.autograd.gradcheck(lambda a, b: d(log_probs(a), log_probs(b)), (s, t))


def test_single_position_single_token_vocab_is_zero() -> None:
    for name in DIVERGENCES:
        assert abs(float(ours(name, torch.tensor([[3.0]]), torch.tensor([[-2.0]])))) < 1e-6


logit_rows = st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=12)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(DIVERGENCES), beta=st.floats(0, 1))
def test_divergences_are_nonnegative(data: st.DataObject, name: str, beta: float) -> None:
    s = data.draw(logit_rows)
    t = data.draw(st.lists(st.floats(-30, 30), min_size=len(s), max_size=len(s)))
    value = ours(
        name,
        torch.tensor(s, dtype=torch.float64),
        torch.tensor(t, dtype=torch.float64),
        beta=beta,
        skew=beta,
    )
    assert float(value) >= -1e-12


@settings(max_examples=40, deadline=None)
@given(row=logit_rows, name=st.sampled_from(DIVERGENCES))
def test_divergence_is_zero_when_teacher_equals_student(row: list[float], name: str) -> None:
    x = torch.tensor(row, dtype=torch.float64)
    assert abs(float(ours(name, x, x))) <= 1e-12


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_jsd_half_is_symmetric(data: st.DataObject) -> None:
    s = data.draw(logit_rows)
    t = data.draw(st.lists(st.floats(-30, 30), min_size=len(s), max_size=len(s)))
    a, b = log_probs(torch.tensor(s).double()), log_probs(torch.tensor(t).double())
    assert math.isclose(float(jsd(a, b, 0.5)), float(jsd(b, a, 0.5)), rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_tvd_is_at_most_one(data: st.DataObject) -> None:
    s = data.draw(logit_rows)
    t = data.draw(st.lists(st.floats(-1e4, 1e4), min_size=len(s), max_size=len(s)))
    assert float(tvd(log_probs(torch.tensor(s)), log_probs(torch.tensor(t)))) <= 1.0 + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "jsd", "beta": 1.5}, "beta must be in [0, 1], got 1.5"),
        ({"name": "jsd", "beta": -0.1}, "beta must be in [0, 1], got -0.1"),
        ({"name": "skew_forward_kl", "skew": 2.0}, "skew must be in [0, 1], got 2.0"),
        ({"name": "kl"}, "divergence must be one of"),
    ],
)
def test_invalid_divergence_arguments_raise_value_error(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=r".*") as info:
        Divergence(**kwargs)
    assert needle in str(info.value)
    assert isinstance(info.value, LossArgumentError)


def test_negative_temperature_raises_naming_it() -> None:
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -1.0"):
        log_probs(torch.zeros(2, 3), temperature=-1.0)


def test_integer_logits_raise_naming_the_dtype() -> None:
    with pytest.raises(ValueError, match=r"logits must be a floating-point tensor.*torch.int64"):
        log_probs(torch.zeros(2, 3, dtype=torch.long))


def test_shape_mismatch_raises_naming_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"student_logp has shape \(2, 3\).*\(2, 4\)"):
        Divergence("forward_kl")(torch.zeros(2, 3), torch.zeros(2, 4))


def test_integer_log_probs_raise_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"student_logp must be a floating-point tensor"):
        Divergence("tvd")(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))


@pytest.mark.parametrize("name", DIVERGENCES)
def test_bf16_log_probs_are_promoted_to_float32(name: str) -> None:
    g = torch.Generator().manual_seed(4)
    s = log_probs(torch.randn(3, 16, generator=g)).bfloat16()
    t = log_probs(torch.randn(3, 16, generator=g)).bfloat16()
    got = Divergence(name)(s, t)
    assert got.dtype == torch.float32
    expected = Divergence(name)(s.float(), t.float())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def _forward_kl_rows(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Forward KL of each row of ``[N, V]`` float64 log-probs, 0 log 0 = 0, by hand."""
    values = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        total = 0.0
        for lq, lp in zip(s_row, t_row, strict=True):
            if lp == -math.inf:
                continue
            total += math.inf if lq == -math.inf else math.exp(lp) * (lp - lq)
        values.append(total)
    return torch.tensor(values, dtype=torch.float64)


def test_zero_teacher_mass_in_a_batch_of_sequences_sums_over_the_vocabulary() -> None:
    g = torch.Generator().manual_seed(5)
    zs = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    zt = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    zt[0, 1, 2] = -math.inf  # a token the teacher excludes, in one position only
    zt[1, 0, :2] = -math.inf
    s, t = log_probs(zs), log_probs(zt)
    got = Divergence("forward_kl")(s, t)
    assert got.shape == (2, 3)
    expected = _forward_kl_rows(s.reshape(6, 5), t.reshape(6, 5)).reshape(2, 3)
    torch.testing.assert_close(got, expected)


def test_skew_zero_is_infinite_where_the_student_excludes_a_teacher_token() -> None:
    zs = torch.tensor([[0.0, -math.inf, 1.0], [0.5, 0.0, -1.0]], dtype=torch.float64)
    zt = torch.tensor([[0.0, 2.0, -math.inf], [1.0, 0.0, 0.0]], dtype=torch.float64)
    s, t = log_probs(zs), log_probs(zt)
    got = Divergence("skew_forward_kl", skew=0.0)(s, t)
    assert float(got[0]) == math.inf
    torch.testing.assert_close(got, _forward_kl_rows(s, t))
    torch.testing.assert_close(got[1:], Divergence("forward_kl")(s, t)[1:])


def test_a_divergence_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Divergence().name = "tvd"  # type: ignore[misc]
