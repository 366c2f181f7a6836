"""Per-chunk terms: values against float64 formulas, and the teacher rows left intact."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from kd_train.losses.checks import LossArgumentError
from kd_train.losses.terms import (
    TermSpec,
    chunk_terms,
    code_preference_per_token,
    kd_per_token,
    log_softmax_,
)
from kd_train.teachers.base import TeacherOutput

C, V = 5, 7
#: float32 results against a float64 reference.
F32 = {"rtol": 1e-5, "atol": 1e-6}


def test_teacher_rows_are_immutable() -> None:
    rows = TeacherOutput(logits=torch.zeros(2, 3), aligned="view")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows.logits = torch.ones(2, 3)  # type: ignore[misc]


def _logits(seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, V, generator=g).to(dtype), (torch.randn(C, V, generator=g) * 2).to(dtype)


def _reference_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Forward KL(softmax(teacher / t) || softmax(student / t)) per row, in float64."""
    s, te = student.double() / t, teacher.double() / t
    p = te.exp() / te.exp().sum(-1, keepdim=True)
    q = s.exp() / s.exp().sum(-1, keepdim=True)
    return (p * (p.log() - q.log())).sum(-1)


def test_term_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TermSpec().temperature = 2.0  # type: ignore[misc]


def test_the_default_spec_scales_kd_by_temperature_squared() -> None:
    student, teacher = _logits(0, torch.float64)
    spec = TermSpec(temperature=2.0)
    kd = kd_per_token(student, TeacherOutput(logits=teacher, aligned="view"), spec)
    torch.testing.assert_close(kd, 4.0 * _reference_kl(student, teacher, 2.0))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_per_token_leaves_the_callers_teacher_logits_untouched(temperature: float) -> None:
    student, teacher = _logits(1)
    before = teacher.clone()
    spec = TermSpec(temperature=temperature, t2_scale=False)
    kd = kd_per_token(student, TeacherOutput(logits=teacher, aligned="view"), spec)
    torch.testing.assert_close(teacher, before, rtol=0, atol=0)
    torch.testing.assert_close(kd.double(), _reference_kl(student, before, temperature), **F32)


def test_chunk_terms_leaves_the_callers_teacher_logits_untouched() -> None:
    student, teacher = _logits(2)
    before = teacher.clone()
    labels = torch.arange(C) % V
    out = chunk_terms(
        student, labels, TeacherOutput(logits=teacher, aligned="view"), {}, TermSpec()
    )
    torch.testing.assert_close(teacher, before, rtol=0, atol=0)
    expected = _reference_kl(student, before, 1.0).sum()
    torch.testing.assert_close(out["kd"].double(), expected, **F32)


def test_scratch_float32_teacher_rows_become_their_log_probs_in_place() -> None:
    student, teacher = _logits(3)
    original = teacher.clone()
    spec = TermSpec(temperature=2.0, t2_scale=False)
    kd = kd_per_token(student, TeacherOutput(logits=teacher, aligned="view"), spec, scratch=True)
    torch.testing.assert_close(teacher, torch.log_softmax(original / 2.0, dim=-1))
    torch.testing.assert_close(kd.double(), _reference_kl(student, original, 2.0), **F32)


def test_scratch_teacher_rows_that_need_a_gradient_are_not_overwritten() -> None:
    student, teacher = _logits(4)
    teacher.requires_grad_(True)
    before = teacher.detach().clone()
    spec = TermSpec(temperature=2.0, t2_scale=False)
    kd = kd_per_token(student, TeacherOutput(logits=teacher, aligned="view"), spec, scratch=True)
    torch.testing.assert_close(teacher.detach(), before, rtol=0, atol=0)
    kd.sum().backward()
    reference = before.double().requires_grad_(True)
    _reference_kl(student, reference, 2.0).sum().backward()
    assert teacher.grad is not None
    torch.testing.assert_close(teacher.grad.double(), reference.grad, **F32)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_log_softmax_in_place_softens_over_the_last_axis(temperature: float) -> None:
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5))
    expected = torch.log_softmax(x.double() / temperature, dim=-1).float()
    out = log_softmax_(x, temperature)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 3))


def test_a_masked_teacher_row_contributes_no_kd() -> None:
    student, teacher = _logits(6, torch.float64)
    mask = torch.tensor([True, False, True, True, False])
    kd = kd_per_token(student, TeacherOutput(logits=teacher, mask=mask, aligned="view"), TermSpec())
    expected = torch.where(mask, _reference_kl(student, teacher, 1.0), 0.0)
    torch.testing.assert_close(kd, expected)
    assert float(kd[1]) == 0.0
    assert float(kd[4]) == 0.0


@pytest.mark.parametrize("stray_ids", [False, True], ids=["plain", "ids-without-logprobs"])
def test_a_teacher_with_hidden_states_must_be_turned_into_rows_first(stray_ids: bool) -> None:
    # Only ids *and* log-probs make a top-k teacher; ids alone do not take that path.
    student, _ = _logits(7)
    ids = torch.zeros(C, 2, dtype=torch.long) if stray_ids else None
    teacher = TeacherOutput(
        hidden=torch.randn(C, 3), head_weight=torch.randn(V, 3), ids=ids, aligned="view"
    )
    with pytest.raises(LossArgumentError, match=r"neither logits nor top-k; call rows\(\)"):
        kd_per_token(student, teacher, TermSpec())


def _reference_preference(z: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    flat, ys = z.double().reshape(-1, z.shape[-1]), labels.reshape(-1)
    values = []
    for row, y in zip(flat, ys.tolist(), strict=True):
        rival = max(float(v) for i, v in enumerate(row) if i != y)
        x = margin - (float(row[y]) - rival)
        values.append(torch.nn.functional.softplus(torch.tensor(x, dtype=torch.float64)))
    return torch.stack(values).reshape(labels.shape)


@pytest.mark.parametrize("margin", [0.0, 1.0, 2.5])
def test_code_preference_is_softplus_of_margin_minus_the_lead_over_the_rival(
    margin: float,
) -> None:
    z = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, 4.0], [1.0, 1.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    out = code_preference_per_token(z, labels, margin)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _reference_preference(z, labels, margin), rtol=0, atol=1e-12)


def test_code_preference_over_the_last_axis_for_any_leading_shape() -> None:
    g = torch.Generator().manual_seed(8)
    z = torch.randn(2, 3, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (2, 3), generator=g)
    out = code_preference_per_token(z, labels, 1.0)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, _reference_preference(z, labels, 1.0))


def test_code_preference_of_bf16_logits_is_computed_in_float32() -> None:
    z = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, 4.0]])
    labels = torch.tensor([1, 2])
    out = code_preference_per_token(z.bfloat16(), labels, 1.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference_preference(z, labels, 1.0).float())


def test_span_terms_with_kd_do_not_report_a_kd_term_that_was_not_asked_for() -> None:
    student, teacher = _logits(9, torch.float64)
    span = torch.tensor([True, False, True, False, False])
    spec = TermSpec(terms=frozenset({"span_tool_name"}), span_loss="kd")
    out = chunk_terms(
        student,
        torch.zeros(C, dtype=torch.long),
        TeacherOutput(logits=teacher, aligned="view"),
        {"tool_name": span},
        spec,
    )
    assert set(out) == {"span_tool_name"}
    torch.testing.assert_close(
        out["span_tool_name"], _reference_kl(student, teacher, 1.0)[span].sum()
    )


def test_span_and_code_terms_without_their_mask_are_zero() -> None:
    student, _ = _logits(10, torch.float64)
    labels = torch.arange(C) % V
    spec = TermSpec(terms=frozenset({"ce", "span_json_args", "code_pref"}))
    out = chunk_terms(student, labels, None, {"tool_name": torch.ones(C, dtype=torch.bool)}, spec)
    assert set(out) == {"ce", "span_json_args", "code_pref"}
    assert float(out["span_json_args"]) == 0.0
    assert float(out["code_pref"]) == 0.0
    expected_ce = torch.nn.functional.cross_entropy(student, labels, reduction="sum")
    torch.testing.assert_close(out["ce"], expected_ce)


def test_code_preference_term_sums_over_the_code_mode_rows_only() -> None:
    student, _ = _logits(11, torch.float64)
    labels = torch.tensor([0, 3, 6, 2, 1])
    code = torch.tensor([False, True, True, False, True])
    spec = TermSpec(terms=frozenset({"code_pref"}), code_pref_margin=1.5)
    out = chunk_terms(student, labels, None, {"code_mode": code}, spec)
    expected = _reference_preference(student[code], labels[code], 1.5).sum()
    torch.testing.assert_close(out["code_pref"], expected)
