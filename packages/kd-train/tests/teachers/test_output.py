"""TeacherOutput: one distribution, its next-token shift, its rows, its tail."""

from __future__ import annotations

import math

import pytest
import torch
from kd_train.teachers.base import MIN_DERIVED_TAIL, TeacherOutput, TeacherOutputError


def test_exactly_one_distribution_is_required():
    with pytest.raises(TeacherOutputError, match="exactly one distribution"):
        TeacherOutput()
    with pytest.raises(TeacherOutputError, match="exactly one distribution"):
        TeacherOutput(logits=torch.zeros(1, 2, 3), ids=torch.zeros(1, 2, 1, dtype=torch.long),
                      logprobs=torch.zeros(1, 2, 1))  # fmt: skip
    with pytest.raises(TeacherOutputError, match="exactly one distribution"):
        TeacherOutput(hidden=torch.zeros(1, 2, 3))  # hidden without its lm_head


def test_ids_and_logprobs_must_have_one_shape():
    with pytest.raises(TeacherOutputError, match=r"ids \(1, 2, 3\) and logprobs \(1, 2, 2\)"):
        TeacherOutput(ids=torch.zeros(1, 2, 3, dtype=torch.long), logprobs=torch.zeros(1, 2, 2))


@pytest.mark.parametrize(("aligned", "kept"), [("logits", [0, 1, 2]), ("labels", [1, 2, 3])])
def test_next_token_drops_the_position_its_alignment_cannot_use(aligned, kept):
    logits = torch.arange(4.0).reshape(1, 4, 1).expand(1, 4, 2).clone()
    layer = torch.arange(4.0).reshape(1, 4, 1)
    out = TeacherOutput(logits=logits, layers=(layer,), aligned=aligned).next_token()
    assert out.aligned == "view"
    assert out.logits is not None
    assert out.logits[0, :, 0].tolist() == kept
    assert out.layers[0][0, :, 0].tolist() == [0, 1, 2]  # layers follow the student's logits
    assert out.next_token() is out


def test_rows_make_the_logits_of_hidden_states_with_the_head_and_bias():
    hidden, weight, bias = torch.randn(2, 3, 4), torch.randn(5, 4), torch.randn(5)
    out = TeacherOutput(hidden=hidden, head_weight=weight, head_bias=bias, aligned="view")
    assert out.positions == (2, 3)
    rows = out.rows(torch.tensor([1, 4]))
    expected = hidden.reshape(6, 4)[[1, 4]] @ weight.T + bias
    assert rows.logits is not None
    torch.testing.assert_close(rows.logits, expected)


def test_rows_need_the_next_token_view():
    with pytest.raises(TeacherOutputError, match="call next_token"):
        TeacherOutput(logits=torch.zeros(1, 2, 3)).rows(torch.tensor([0]))


def test_topk_rows_carry_ids_logprobs_tail_and_mask():
    ids = torch.arange(12).reshape(1, 3, 4)
    out = TeacherOutput(
        ids=ids,
        logprobs=torch.full((1, 3, 4), -2.0),
        tail=torch.tensor([[-1.0, -2.0, -3.0]]),
        mask=torch.tensor([[True, False, True]]),
        aligned="view",
    )
    rows = out.rows(torch.tensor([2]))
    assert rows.ids is not None
    assert rows.ids.tolist() == [[8, 9, 10, 11]]
    assert rows.tail is not None
    assert rows.tail.tolist() == [-3.0]
    assert rows.mask is not None
    assert rows.mask.tolist() == [True]


def test_a_derived_tail_is_floored_and_a_stored_one_is_used_as_is():
    certain = TeacherOutput(ids=torch.tensor([[0, 1]]), logprobs=torch.tensor([[0.0, -30.0]]))
    assert float(certain.tail_logprob()[0]) == pytest.approx(math.log(MIN_DERIVED_TAIL))
    stored = TeacherOutput(
        ids=torch.tensor([[0, 1]]),
        logprobs=torch.tensor([[0.0, -30.0]]),
        tail=torch.tensor([-40.0]),
    )
    assert float(stored.tail_logprob()[0]) == -40.0
    assert stored.topk_parts()[2].tolist() == [-40.0]


def test_a_dense_output_has_no_topk_or_tail():
    dense = TeacherOutput(logits=torch.zeros(1, 2, 3))
    assert not dense.is_topk
    with pytest.raises(TeacherOutputError, match="no top-k tail"):
        dense.tail_logprob()
    with pytest.raises(TeacherOutputError, match="no top-k"):
        dense.topk_parts()


def test_to_moves_the_head_too():
    out = TeacherOutput(hidden=torch.zeros(1, 2, 3), head_weight=torch.zeros(4, 3)).to("cpu")
    assert out.head_weight is not None
    assert out.head_weight.device.type == "cpu"
