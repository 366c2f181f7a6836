import math

import pytest
import torch
from kd_eval.errors import MetricInputError
from kd_eval.fidelity.metrics import token_metrics


def test_forward_kl_matches_the_hand_computed_value():
    p, q = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25]
    m = token_metrics(torch.tensor([p]).log(), torch.tensor([q]).log(), torch.tensor([0]))
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    assert float(m.forward_kl[0]) == pytest.approx(expected)


def test_identical_distributions_have_zero_kl_and_full_agreement():
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    m = token_metrics(logits, logits.clone(), torch.zeros(4, dtype=torch.long), k=3)
    assert m.forward_kl.tolist() == pytest.approx([0.0] * 4, abs=1e-12)
    assert m.top1_agreement.tolist() == [1.0] * 4
    assert m.topk_overlap.tolist() == [1.0] * 4


def test_top1_agreement_is_zero_when_the_argmax_differs():
    m = token_metrics(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]]), torch.tensor([0]))
    assert m.top1_agreement.tolist() == [0.0]


def test_topk_overlap_counts_the_shared_ids():
    teacher = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])  # top-2: {0, 1}
    student = torch.tensor([[4.0, 0.0, 0.5, 3.0, 1.0]])  # top-2: {0, 3}
    m = token_metrics(teacher, student, torch.tensor([0]), k=2)
    assert m.topk_overlap.tolist() == [0.5]


def test_nll_is_minus_the_log_probability_of_the_target():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = [1/4, 3/4]
    m = token_metrics(logits, logits, torch.tensor([1]))
    assert float(m.teacher_nll[0]) == pytest.approx(-math.log(0.75))
    assert float(m.student_nll[0]) == pytest.approx(-math.log(0.75))


def test_different_shapes_are_rejected():
    with pytest.raises(ValueError, match="differ"):
        token_metrics(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))


# -- degenerate inputs -------------------------------------------------------------------


def test_zero_positions_give_empty_metrics():
    empty = torch.zeros(0, 5)
    m = token_metrics(empty, empty, torch.zeros(0, dtype=torch.long))
    for name in ("forward_kl", "top1_agreement", "topk_overlap", "teacher_nll", "student_nll"):
        assert getattr(m, name).shape == (0,)


def test_a_kl_or_perplexity_of_zero_tokens_is_refused_not_nan():
    from kd_eval.stats.bootstrap import bootstrap_mean

    with pytest.raises(MetricInputError, match="no tokens"):
        bootstrap_mean([1.5], weights=[0])  # an example of 0 tokens: no mean NLL


@pytest.mark.parametrize(
    ("teacher", "student", "targets", "message"),
    [
        (torch.zeros(2, 0), torch.zeros(2, 0), torch.zeros(2, dtype=torch.long), "V = 0"),
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), "are not \\[T\\]"),
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 3]), "outside the vocabulary"),
        (torch.zeros(3), torch.zeros(3), torch.zeros(1, dtype=torch.long), "not \\[T, V\\]"),
    ],
)
def test_inputs_without_a_defined_metric_are_refused(teacher, student, targets, message):
    with pytest.raises(MetricInputError, match=message):
        token_metrics(teacher, student, targets)
