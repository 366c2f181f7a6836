"""Top-k teacher with a tail bucket, against a float64 reference built by hand."""

from __future__ import annotations

import math

import pytest
import torch
from kd_train.losses import Divergence, bucket_log_probs, log_probs


def reference_buckets(student_logits: torch.Tensor, ids: list[int], teacher_probs: list[float]):
    q = torch.softmax(student_logits.double(), -1)
    qs = [float(q[i]) for i in ids]
    s = [*qs, 1.0 - sum(qs)]
    t = [*list(teacher_probs), 1.0 - sum(teacher_probs)]
    return torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)


def test_buckets_hold_topk_probabilities_and_the_tail() -> None:
    z = torch.randn(10, dtype=torch.float64)
    ids, probs = [3, 7, 1], [0.5, 0.2, 0.1]
    s, t = bucket_log_probs(
        log_probs(z)[None], torch.tensor([ids]), torch.tensor([probs], dtype=torch.float64).log()
    )
    rs, rt = reference_buckets(z, ids, probs)
    torch.testing.assert_close(s[0].exp(), rs)
    torch.testing.assert_close(t[0].exp(), rt)


def test_forward_kl_on_buckets_matches_reference_kl() -> None:
    z = torch.randn(10, dtype=torch.float64)
    ids, probs = [0, 4], [0.6, 0.3]
    s, t = bucket_log_probs(
        log_probs(z)[None], torch.tensor([ids]), torch.tensor([probs], dtype=torch.float64).log()
    )
    rs, rt = reference_buckets(z, ids, probs)
    expected = (rt * (rt.log() - rs.log())).sum()
    torch.testing.assert_close(Divergence("forward_kl")(s, t)[0], expected)


def test_full_coverage_topk_equals_dense_kl() -> None:
    zs, zt = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    lt = log_probs(zt)
    ids = torch.argsort(lt, dim=-1, descending=True)
    s, t = bucket_log_probs(log_probs(zs), ids, lt.gather(-1, ids))
    dense = Divergence("forward_kl")(log_probs(zs), lt)
    torch.testing.assert_close(Divergence("forward_kl")(s, t), dense)


def test_renormalize_drops_the_tail() -> None:
    z = torch.zeros(1, 6)
    s, t = bucket_log_probs(
        log_probs(z), torch.tensor([[0, 1]]), torch.tensor([[0.3, 0.1]]).log(), tail="renormalize"
    )
    torch.testing.assert_close(t.exp(), torch.tensor([[0.75, 0.25]]))
    torch.testing.assert_close(s.exp(), torch.tensor([[0.5, 0.5]]))


def test_temperature_softens_teacher_buckets_with_the_tail_spread_evenly() -> None:
    lt = torch.tensor([[0.7, 0.2]]).log()
    _, t1 = bucket_log_probs(log_probs(torch.zeros(1, 4)), torch.tensor([[0, 1]]), lt)
    _, t2 = bucket_log_probs(
        log_probs(torch.zeros(1, 4)), torch.tensor([[0, 1]]), lt, temperature=2.0
    )
    # The tail's 0.1 spread over the 2 other ids: 2 * (0.1 / 2) ** (1 / 2).
    raw = torch.tensor([0.7**0.5, 0.2**0.5, 2 * 0.05**0.5])
    torch.testing.assert_close(t2[0].exp(), raw / raw.sum())
    assert float(t2[0].exp().max()) < float(t1[0].exp().max())


def test_stored_tail_is_used_instead_of_the_top_k_sum() -> None:
    # The top-k log-probs say 0.9 is covered; the stored tail says 0.05 is not.
    s, t = bucket_log_probs(
        log_probs(torch.zeros(1, 6, dtype=torch.float64)),
        torch.tensor([[0, 1]]),
        torch.tensor([[0.6, 0.3]], dtype=torch.float64).log(),
        teacher_tail=torch.tensor([0.05], dtype=torch.float64).log(),
    )
    torch.testing.assert_close(t[0].exp(), torch.tensor([0.6, 0.3, 0.05]).double() / 0.95)
    assert s.shape == t.shape == (1, 3)


def test_derived_tail_is_floored_when_the_top_k_rounds_to_all_the_mass() -> None:
    _, t = bucket_log_probs(
        log_probs(torch.zeros(1, 6)), torch.tensor([[3, 1]]), torch.tensor([[0.0, -5.0]])
    )
    expected = math.log(1e-12) - math.log(1.0 + math.exp(-5.0) + 1e-12)
    assert float(t[0, -1]) == pytest.approx(expected, rel=1e-5)


def test_truncate_adds_out_of_vocab_mass_to_a_stored_tail() -> None:
    _, t = bucket_log_probs(
        log_probs(torch.zeros(1, 8)),
        torch.tensor([[1, 12]]),
        torch.tensor([[0.5, 0.2]]).log(),
        teacher_tail=torch.tensor([0.3]).log(),
        vocab_policy="truncate",
    )
    torch.testing.assert_close(t[0].exp(), torch.tensor([0.5, 0.0, 0.5]))


def test_stored_tail_of_the_wrong_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"teacher_tail"):
        bucket_log_probs(
            log_probs(torch.zeros(2, 4)),
            torch.tensor([[0], [1]]),
            torch.tensor([[-1.0], [-1.0]]),
            teacher_tail=torch.tensor([-1.0]),
        )


def test_out_of_vocab_ids_raise_under_error_policy_naming_sizes() -> None:
    with pytest.raises(
        ValueError, match=r"teacher top-k id 12 is outside the student vocabulary of 8"
    ):
        bucket_log_probs(
            log_probs(torch.zeros(1, 8)), torch.tensor([[1, 12]]), torch.tensor([[0.5, 0.2]]).log()
        )


def test_truncate_moves_out_of_vocab_mass_into_the_tail() -> None:
    s, t = bucket_log_probs(
        log_probs(torch.zeros(1, 8)),
        torch.tensor([[1, 12]]),
        torch.tensor([[0.5, 0.2]]).log(),
        vocab_policy="truncate",
    )
    torch.testing.assert_close(t[0].exp(), torch.tensor([0.5, 0.0, 0.5]))
    torch.testing.assert_close(s[0].exp(), torch.tensor([0.125, 0.0, 0.875]))


def test_gradient_is_finite_when_topk_covers_the_whole_vocabulary() -> None:
    z = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    s, t = bucket_log_probs(
        log_probs(z),
        torch.tensor([[2, 0, 1]]),
        torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64).log(),
    )
    Divergence("forward_kl")(s, t).sum().backward()
    assert z.grad is not None
    assert bool(z.grad.isfinite().all())
    assert math.isinf(float(s[0, -1].detach()))
    assert math.isinf(float(t[0, -1].detach()))


def test_gradcheck_float64_through_buckets() -> None:
    z = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[1, 4], [0, 5]])
    lt = torch.tensor([[0.4, 0.3], [0.5, 0.1]], dtype=torch.float64).log()
    d = Divergence("jsd", beta=0.4)
    assert torch.autograd.gradcheck(lambda x: d(*bucket_log_probs(log_probs(x), ids, lt)), (z,))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"tail": "spread"}, "tail must be one of bucket, renormalize; got 'spread'"),
        ({"vocab_policy": "pad"}, "vocab_policy must be one of error, truncate; got 'pad'"),
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
    ],
)
def test_invalid_sparse_arguments_raise(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        bucket_log_probs(
            log_probs(torch.zeros(1, 4)), torch.tensor([[0]]), torch.tensor([[-1.0]]), **kwargs
        )
    assert needle in str(info.value)


def test_negative_ids_raise() -> None:
    with pytest.raises(ValueError, match=r"ids must be >= 0, got -1"):
        bucket_log_probs(log_probs(torch.zeros(1, 4)), torch.tensor([[-1]]), torch.tensor([[-1.0]]))


def test_float_ids_raise_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"ids must be an integer tensor"):
        bucket_log_probs(
            log_probs(torch.zeros(1, 4)), torch.tensor([[0.0]]), torch.tensor([[-1.0]])
        )
