"""ULD, the merged group measures and the align hybrid (kd_train.losses.cross_tokenizer)."""

import math

import pytest
import torch
from kd_train.data.alignment import GroupIndex
from kd_train.losses.checks import LossArgumentError
from kd_train.losses.config import LossConfig
from kd_train.losses.cross_tokenizer import (
    CrossTokenizerLoss,
    matched_kl,
    merged_log_measures,
    uld,
)


def log(values):
    return torch.log(torch.tensor(values, dtype=torch.float64))


def test_uld_is_zero_for_identical_distributions():
    p = torch.log_softmax(torch.randn(5, 17, dtype=torch.float64), -1)
    assert torch.equal(uld(p, p), torch.zeros(5, dtype=torch.float64))


def test_uld_is_zero_for_a_permutation_padded_with_zeros():
    p = log([[0.6, 0.3, 0.1]])
    q = log([[0.1, 0.0, 0.6, 0.0, 0.3]])
    assert uld(p, q).item() == pytest.approx(0.0, abs=1e-12)


def test_uld_is_the_l1_distance_of_the_sorted_vectors():
    p, q = log([[0.3, 0.7]]), log([[0.25, 0.5, 0.25]])
    # sorted: [0.7, 0.3, 0] vs [0.5, 0.25, 0.25]
    assert uld(p, q).item() == pytest.approx(0.2 + 0.05 + 0.25)


def test_uld_is_symmetric():
    p = torch.log_softmax(torch.randn(4, 9, dtype=torch.float64), -1)
    q = torch.log_softmax(torch.randn(4, 13, dtype=torch.float64), -1)
    assert torch.allclose(uld(p, q), uld(q, p))
    assert bool((uld(p, q) > 0).all())


def test_matched_kl_is_forward_kl_for_normalised_distributions():
    p = torch.log_softmax(torch.randn(3, 8, dtype=torch.float64), -1)
    q = torch.log_softmax(torch.randn(3, 8, dtype=torch.float64), -1)
    kl = (p.exp() * (p - q)).sum(-1)
    assert torch.allclose(matched_kl(q, p), kl)
    assert torch.allclose(matched_kl(p, p), torch.zeros(3, dtype=torch.float64))


def test_matched_kl_sees_a_difference_in_mass_alone():
    p = log([[0.5, 0.25]])
    assert matched_kl(p + math.log(0.5), p).item() > 0
    assert matched_kl(p, p + math.log(0.5)).item() > 0


def test_a_group_measure_is_the_first_distribution_times_the_chain():
    logits = torch.randn(1, 6, 10, dtype=torch.float64)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    index = GroupIndex.from_ranges([(0, 2, 5)])  # tokens at 2, 3, 4
    merged = merged_log_measures(logits, ids, index)
    logp = torch.log_softmax(logits, -1)
    chain = logp[0, 2, 4] + logp[0, 3, 5]  # tokens 3 and 4, predicted from rows 2 and 3
    assert torch.allclose(merged[0], logp[0, 1] + chain)
    # The text of the group gets the product of its tokens' probabilities.
    assert merged[0, 3].item() == pytest.approx((logp[0, 1, 3] + chain).item())


def test_temperature_softens_both_the_distribution_and_the_chain():
    logits = torch.randn(1, 4, 7, dtype=torch.float64)
    ids = torch.tensor([[0, 1, 2, 3]])
    index = GroupIndex.from_ranges([(0, 1, 3)])
    hot = merged_log_measures(logits, ids, index, temperature=2.0)
    assert torch.allclose(hot, merged_log_measures(logits / 2.0, ids, index))


def identity_map(vocab):
    ids = torch.arange(vocab)
    return ids, ids


def test_align_on_one_vocabulary_and_one_to_one_groups_is_forward_kl():
    s_logits = torch.randn(2, 5, 11, dtype=torch.float64)
    t_logits = torch.randn(2, 5, 11, dtype=torch.float64)
    ids = torch.randint(0, 11, (2, 5))
    ranges = [(b, p, p + 1) for b in range(2) for p in range(1, 5)]
    index = GroupIndex.from_ranges(ranges)
    loss = CrossTokenizerLoss("align", vocab_map=identity_map(11))
    got = loss(s_logits, ids, index, t_logits, ids, index)
    s = torch.log_softmax(s_logits[:, :-1], -1).reshape(-1, 11)
    t = torch.log_softmax(t_logits[:, :-1], -1).reshape(-1, 11)
    assert torch.allclose(got, (t.exp() * (t - s)).sum(-1))


def cross_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    s_logits = torch.randn(2, 7, 9, dtype=torch.float64, generator=gen)
    t_logits = torch.randn(2, 6, 13, dtype=torch.float64, generator=gen)
    s_ids = torch.randint(0, 9, (2, 7), generator=gen)
    t_ids = torch.randint(0, 13, (2, 6), generator=gen)
    # Row 0: student [3][4 5][6] vs teacher [2 3][4][5]; row 1: one group of 3 vs 2.
    s_groups = GroupIndex.from_ranges([(0, 3, 4), (0, 4, 6), (0, 6, 7), (1, 2, 5)])
    t_groups = GroupIndex.from_ranges([(0, 2, 4), (0, 4, 5), (0, 5, 6), (1, 3, 5)])
    return s_logits, s_ids, s_groups, t_logits, t_ids, t_groups


VOCAB_MAP = (torch.tensor([0, 2, 5, 8]), torch.tensor([1, 2, 7, 12]))


@pytest.mark.parametrize("method", ["uld", "align"])
def test_gradcheck(method):
    s_logits, s_ids, s_groups, t_logits, t_ids, t_groups = cross_inputs()
    loss = CrossTokenizerLoss(method, temperature=1.5, vocab_map=VOCAB_MAP)

    def f(x):
        return loss(x, s_ids, s_groups, t_logits, t_ids, t_groups)

    assert torch.autograd.gradcheck(f, (s_logits.requires_grad_(),))


@pytest.mark.parametrize("method", ["uld", "align"])
def test_positions_outside_every_group_get_no_gradient_and_change_nothing(method):
    s_logits, s_ids, s_groups, t_logits, t_ids, t_groups = cross_inputs()
    loss = CrossTokenizerLoss(method, vocab_map=VOCAB_MAP)
    x = s_logits.clone().requires_grad_()
    value = loss(x, s_ids, s_groups, t_logits, t_ids, t_groups)
    value.sum().backward()
    read = torch.zeros(2, 7, dtype=torch.bool)
    read[s_groups.first_row, s_groups.first_pos - 1] = True
    read[s_groups.rest_row, s_groups.rest_pos - 1] = True
    assert x.grad is not None
    assert bool((x.grad[~read] == 0).all())
    # (ULD's gradient can vanish at a row: all its sorted entries above the teacher's.)
    assert float(x.grad[read].abs().sum()) > 0
    moved = s_logits.clone()
    moved[~read] += 100.0  # the prompt and padding rows
    again = loss(moved, s_ids, s_groups, t_logits, t_ids, t_groups)
    assert torch.equal(again, value.detach())


def test_no_gradient_reaches_the_teacher():
    s_logits, s_ids, s_groups, t_logits, t_ids, t_groups = cross_inputs()
    t = t_logits.clone().requires_grad_()
    CrossTokenizerLoss("uld")(
        s_logits.requires_grad_(), s_ids, s_groups, t, t_ids, t_groups
    ).sum().backward()
    assert t.grad is None


def test_group_counts_must_agree():
    s_logits, s_ids, s_groups, t_logits, t_ids, _ = cross_inputs()
    with pytest.raises(LossArgumentError, match="4 student groups but 1 teacher groups"):
        CrossTokenizerLoss("uld")(
            s_logits, s_ids, s_groups, t_logits, t_ids, GroupIndex.from_ranges([(0, 2, 3)])
        )


def test_align_needs_a_vocabulary_map_and_methods_are_checked():
    with pytest.raises(LossArgumentError, match="vocabulary map"):
        CrossTokenizerLoss("align")
    with pytest.raises(LossArgumentError, match="one of uld, align"):
        CrossTokenizerLoss("wasserstein")


def test_config_refuses_what_a_cross_tokenizer_teacher_cannot_feed():
    assert LossConfig.from_dict({"cross_tokenizer": {"method": "uld"}}).cross_tokenizer.method == (
        "uld"
    )
    with pytest.raises(LossArgumentError, match=r"loss\.cross_tokenizer\.method"):
        LossConfig.from_dict({"cross_tokenizer": {"method": "wasserstein"}})
    with pytest.raises(LossArgumentError, match="no active 'kd' term"):
        LossConfig.from_dict({"cross_tokenizer": {}, "weights": {"ce": 1.0}})
    with pytest.raises(LossArgumentError, match=r"loss\.hidden: not available"):
        LossConfig.from_dict(
            {
                "cross_tokenizer": {},
                "weights": {"kd": 1.0, "hidden": 1.0},
                "hidden": {"layer_map": [[0, 0]]},
            }
        )
    with pytest.raises(LossArgumentError, match="span_loss"):
        LossConfig.from_dict(
            {
                "cross_tokenizer": {},
                "span_loss": "kd",
                "weights": {"kd": 1.0, "span_tool_name": 1.0},
            }
        )


def test_uld_and_matched_kl_work_on_the_last_axis_of_any_shape():
    gen = torch.Generator().manual_seed(3)
    p = torch.log_softmax(torch.randn(2, 3, 5, dtype=torch.float64, generator=gen), -1)
    q = torch.log_softmax(torch.randn(2, 3, 7, dtype=torch.float64, generator=gen), -1)
    got = uld(p, q)
    assert got.shape == (2, 3)
    assert torch.allclose(got, uld(p.reshape(6, 5), q.reshape(6, 7)).reshape(2, 3))
    assert torch.allclose(uld(q, p), got)  # the student's side the wider one
    r = torch.log_softmax(torch.randn(2, 3, 5, dtype=torch.float64, generator=gen), -1)
    kl = matched_kl(p, r)
    assert kl.shape == (2, 3)
    assert torch.allclose(kl, matched_kl(p.reshape(6, 5), r.reshape(6, 5)).reshape(2, 3))


def test_group_measures_of_half_precision_logits_are_float32():
    logits, ids = torch.randn(1, 6, 10).to(torch.bfloat16), torch.tensor([[1, 2, 3, 4, 5, 6]])
    index = GroupIndex.from_ranges([(0, 2, 5)])
    merged = merged_log_measures(logits, ids, index)
    assert merged.dtype == torch.float32
    want = merged_log_measures(logits.float(), ids, index)
    assert torch.allclose(merged, want)


def test_uld_ignores_the_align_weights():
    s_logits, s_ids, s_groups, t_logits, t_ids, t_groups = cross_inputs()
    plain = CrossTokenizerLoss("uld")(s_logits, s_ids, s_groups, t_logits, t_ids, t_groups)
    weighted = CrossTokenizerLoss("uld", kl_weight=3.0, uld_weight=2.0)
    got = weighted(s_logits, s_ids, s_groups, t_logits, t_ids, t_groups)
    assert torch.equal(got, plain)
    assert bool((plain > 0).all())


def test_align_is_the_weighted_sum_of_the_matched_kl_and_the_uld_of_the_rest():
    s_logits, s_ids, s_groups, t_logits, t_ids, t_groups = cross_inputs()
    loss = CrossTokenizerLoss("align", vocab_map=VOCAB_MAP, kl_weight=0.7, uld_weight=1.9)
    got = loss(s_logits, s_ids, s_groups, t_logits, t_ids, t_groups)
    s_log = merged_log_measures(s_logits, s_ids, s_groups)
    t_log = merged_log_measures(t_logits, t_ids, t_groups)
    s_ids_m, t_ids_m = VOCAB_MAP
    exact = matched_kl(s_log[:, s_ids_m], t_log[:, t_ids_m])
    keep_s = torch.ones(9, dtype=torch.bool)
    keep_t = torch.ones(13, dtype=torch.bool)
    keep_s[s_ids_m], keep_t[t_ids_m] = False, False
    rest = uld(s_log[:, keep_s], t_log[:, keep_t])
    assert bool((exact > 0).all())
    assert bool((rest > 0).all())
    assert torch.allclose(got, 0.7 * exact + 1.9 * rest)


def test_the_vocabulary_map_is_not_part_of_the_loss_state():
    loss = CrossTokenizerLoss("align", vocab_map=VOCAB_MAP)
    assert loss.state_dict() == {}
    assert torch.equal(loss.student_ids, VOCAB_MAP[0])


def test_the_stored_config_has_cross_tokenizer_only_when_set_and_reads_back():
    plain = LossConfig.from_dict({"weights": {"kd": 1.0}})
    assert "cross_tokenizer" not in plain.to_dict()
    cross = LossConfig.from_dict({"weights": {"kd": 1.0}, "cross_tokenizer": {"method": "uld"}})
    stored = cross.to_dict()
    assert stored["cross_tokenizer"]["method"] == "uld"
    assert LossConfig.from_dict(stored) == cross


def test_span_loss_kd_is_refused_only_when_a_span_term_is_active():
    base = {"weights": {"kd": 1.0}, "cross_tokenizer": {"method": "uld"}, "span_loss": "kd"}
    assert LossConfig.from_dict(base).span_loss == "kd"
