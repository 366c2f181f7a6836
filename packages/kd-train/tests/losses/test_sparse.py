"""Top-k teacher with a tail bucket, against a float64 reference built by hand."""

from __future__ import annotations

import math

import pytest
import torch
from kd_train.losses import Divergence, LossArgumentError, bucket_log_probs, log_probs
from kd_train.losses.sparse import safe_logsumexp


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


def _log_softmax(values: list[float]) -> list[float]:
    finite = [v for v in values if v != -math.inf]
    top = max(finite)
    log_z = top + math.log(sum(math.exp(v - top) for v in finite))
    return [v - log_z for v in values]


def reference_position(
    student_logp: list[float],
    ids: list[int],
    teacher_logp: list[float],
    tail_logp: float | None,
    tail: str,
    temperature: float,
) -> tuple[list[float], list[float]]:
    """The buckets of one position, from the module docstring, in Python floats."""
    vocab = len(student_logp)
    inside = [i for i in ids if i < vocab]
    s_top = [student_logp[i] if i < vocab else -math.inf for i in ids]
    t_top = [lp if i < vocab else -math.inf for i, lp in zip(ids, teacher_logp, strict=True)]
    if tail == "renormalize":
        return _log_softmax(s_top), _log_softmax([v / temperature for v in t_top])
    rest = [math.exp(lp) for v, lp in enumerate(student_logp) if v not in inside]
    s_tail = math.log(sum(rest)) if rest and sum(rest) > 0 else -math.inf
    if tail_logp is None:
        mass = max(1.0 - sum(math.exp(v) for v in t_top), 1e-12)
    else:
        dropped = [math.exp(lp) for i, lp in zip(ids, teacher_logp, strict=True) if i >= vocab]
        mass = math.exp(tail_logp) + sum(dropped)
    n = max(vocab - len(inside), 1)
    soft = math.log(mass) / temperature + (1.0 - 1.0 / temperature) * math.log(n)
    if s_tail == -math.inf:
        soft = -math.inf
    t_b = _log_softmax([*(v / temperature for v in t_top), soft])
    return [*s_top, s_tail], t_b


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("stored_tail", [False, True], ids=["derived-tail", "stored-tail"])
@pytest.mark.parametrize("beyond", [False, True], ids=["in-vocab", "beyond-vocab"])
def test_buckets_of_every_position_of_a_batch_match_the_reference(
    temperature: float, tail: str, stored_tail: bool, beyond: bool
) -> None:
    """``[B, T, V]`` inputs: each position is bucketed on its own (last axis only)."""
    g = torch.Generator().manual_seed(21)
    b, t, vocab, k = 2, 3, 6, 3
    student = torch.log_softmax(torch.randn(b, t, vocab, generator=g, dtype=torch.float64), -1)
    ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(b * t)])
    ids = ids.reshape(b, t, k)
    if beyond:
        ids[0, 1, 2] = vocab  # the first id past the student's vocabulary
        ids[1, 2, 0] = vocab + 4
    probs = torch.softmax(torch.randn(b, t, k + 1, generator=g, dtype=torch.float64), -1)
    teacher = probs[..., :k].log()
    tail_logp = probs[..., k].log() if stored_tail else None
    s, te = bucket_log_probs(
        student,
        ids,
        teacher,
        teacher_tail=tail_logp,
        tail=tail,
        temperature=temperature,
        vocab_policy="truncate",
    )
    width = k if tail == "renormalize" else k + 1
    assert s.shape == te.shape == (b, t, width)
    for i in range(b):
        for j in range(t):
            rs, rt = reference_position(
                student[i, j].tolist(),
                ids[i, j].tolist(),
                teacher[i, j].tolist(),
                None if tail_logp is None else float(tail_logp[i, j]),
                tail,
                temperature,
            )
            expected = torch.tensor([rs, rt], dtype=torch.float64)
            torch.testing.assert_close(torch.stack([s[i, j], te[i, j]]), expected)


def test_an_id_equal_to_the_vocabulary_size_is_outside_it() -> None:
    student = log_probs(torch.zeros(1, 4))
    with pytest.raises(LossArgumentError, match=r"teacher top-k id 4 is outside the student"):
        bucket_log_probs(student, torch.tensor([[1, 4]]), torch.tensor([[0.5, 0.2]]).log())


def test_safe_logsumexp_reduces_the_last_axis_of_a_batch() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x[0, 1] = -math.inf
    x[1, 2, :3] = -math.inf
    x.requires_grad_(True)
    out = safe_logsumexp(x)
    assert out.shape == (2, 3)
    expected = torch.logsumexp(x.detach(), dim=-1)
    torch.testing.assert_close(out.detach(), expected)
    assert float(out[0, 1].detach()) == -math.inf
    out.masked_fill(torch.isneginf(out), 0.0).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert not bool(x.grad[0, 1].any())
