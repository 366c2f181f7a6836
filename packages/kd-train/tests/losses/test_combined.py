"""The combined loss: dense and chunked paths, masking, accumulation, spans, schedules."""

from __future__ import annotations

import pytest
import torch
from kd_train.losses import DistillationLoss, LinearWarmup, LossArgumentError, LossConfig
from kd_train.teachers.base import TeacherOutput
from torch.nn import functional

B, T, H, V = 2, 7, 6, 13


def view(logits: torch.Tensor) -> TeacherOutput:
    """Dense teacher logits already in the next-token view."""
    return TeacherOutput(logits=logits, aligned="view")


def batch(seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :2] = -100
    labels[1, -1] = -100
    return {
        "labels": labels,
        "hidden": torch.randn(B, T, H, generator=g, dtype=dtype),
        "weight": torch.randn(V, H, generator=g, dtype=dtype),
        "bias": torch.randn(V, generator=g, dtype=dtype),
        "teacher": torch.randn(B, T, V, generator=g, dtype=dtype) * 2,
    }


def dense_and_chunked(cfg: LossConfig, data: dict[str, torch.Tensor], **extra):
    results = []
    for chunked in (False, True):
        h = data["hidden"].clone().requires_grad_(True)
        w = data["weight"].clone().requires_grad_(True)
        b = data["bias"].clone().requires_grad_(True)
        loss = DistillationLoss(cfg)
        if chunked:
            out = loss(data["labels"], student_hidden=h, lm_head_weight=w, lm_head_bias=b, **extra)
        else:
            out = loss(data["labels"], student_logits=h @ w.T + b, **extra)
        out["loss"].backward()
        results.append((out, h.grad, w.grad, b.grad))
    return results


@pytest.mark.parametrize(
    "divergence", ["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "tvd"]
)
def test_chunked_path_matches_dense_values_and_gradients(divergence: str) -> None:
    data = batch()
    cfg = LossConfig(
        divergence=divergence, temperature=2.0, weights={"kd": 1.0, "ce": 0.3}, chunk_size=3
    )
    (dense, *dg), (chunk, *cg) = dense_and_chunked(cfg, data, teacher=view(data["teacher"]))
    # float64 throughout: the two paths differ only by summation order.
    for name in ("loss", "kd", "ce"):
        torch.testing.assert_close(
            chunk[name].double(), dense[name].double(), rtol=1e-10, atol=1e-12
        )
    for a, b in zip(cg, dg, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_chunked_path_with_teacher_hidden_states_matches_teacher_logits() -> None:
    data = batch(1)
    th = torch.randn(B, T, 4, dtype=torch.float64)
    tw = torch.randn(V, 4, dtype=torch.float64)
    cfg = LossConfig(divergence="jsd", chunk_size=4)
    (_dense, *_dg), (chunk, *cg) = dense_and_chunked(cfg, data, teacher=view(th @ tw.T))
    h = data["hidden"].clone().requires_grad_(True)
    out = DistillationLoss(cfg)(
        data["labels"],
        student_hidden=h,
        lm_head_weight=data["weight"],
        lm_head_bias=data["bias"],
        teacher=TeacherOutput(hidden=th, head_weight=tw, aligned="view"),
    )
    out["loss"].backward()
    torch.testing.assert_close(out["loss"].double(), chunk["loss"].double())
    torch.testing.assert_close(h.grad, cg[0])


def test_chunked_path_with_topk_teacher_matches_dense() -> None:
    data = batch(2)
    lt = torch.log_softmax(data["teacher"], -1)
    top = lt.topk(4, dim=-1)
    teacher = TeacherOutput(ids=top.indices, logprobs=top.values, aligned="view")
    cfg = LossConfig(chunk_size=5)
    (dense, *dg), (chunk, *cg) = dense_and_chunked(cfg, data, teacher=teacher)
    torch.testing.assert_close(chunk["loss"].double(), dense["loss"].double())
    for a, b in zip(cg, dg, strict=True):
        torch.testing.assert_close(a, b)


def test_gradcheck_chunked_path_float64() -> None:
    g = torch.Generator().manual_seed(3)
    h = torch.randn(1, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.tensor([[1, -100, 4]])
    teacher = torch.randn(1, 3, 5, dtype=torch.float64, generator=g)
    loss = DistillationLoss(
        LossConfig(divergence="jsd", weights={"kd": 1.0, "ce": 0.5}, chunk_size=1)
    )

    def f(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return loss(labels, student_hidden=hidden, lm_head_weight=weight, teacher=view(teacher))[
            "loss"
        ]

    assert torch.autograd.gradcheck(f, (h, w))


def test_loss_is_mean_over_real_tokens() -> None:
    data = batch(4)
    logits = data["hidden"] @ data["weight"].T
    out = DistillationLoss(LossConfig(weights={"ce": 1.0}))(data["labels"], student_logits=logits)
    expected = functional.cross_entropy(logits.reshape(-1, V), data["labels"].reshape(-1))
    torch.testing.assert_close(out["ce"], expected)


def test_gradient_accumulation_with_num_items_equals_one_big_batch() -> None:
    data = batch(5)
    labels = data["labels"].clone()
    labels[1, :5] = -100  # micro-batches with different real-token counts
    cfg = LossConfig(weights={"kd": 1.0, "ce": 1.0})
    w_big = data["weight"].clone().requires_grad_(True)
    big = DistillationLoss(cfg)(
        labels, student_logits=data["hidden"] @ w_big.T, teacher=view(data["teacher"])
    )
    big["loss"].backward()
    w_acc = data["weight"].clone().requires_grad_(True)
    total = int((labels != -100).sum())
    for i in range(B):
        sl = slice(i, i + 1)
        micro = DistillationLoss(cfg)(
            labels[sl],
            student_logits=data["hidden"][sl] @ w_acc.T,
            teacher=view(data["teacher"][sl]),
            num_items_in_batch=total,
        )
        micro["loss"].backward()
    torch.testing.assert_close(w_acc.grad, w_big.grad)


def test_per_micro_batch_mean_differs_from_big_batch_without_num_items() -> None:
    data = batch(5)
    labels = data["labels"].clone()
    labels[1, :5] = -100
    cfg = LossConfig(weights={"ce": 1.0})
    big = DistillationLoss(cfg)(labels, student_logits=data["hidden"] @ data["weight"].T)
    halves = [
        DistillationLoss(cfg)(
            labels[i : i + 1], student_logits=data["hidden"][i : i + 1] @ data["weight"].T
        )["loss"]
        for i in range(B)
    ]
    assert not torch.isclose(sum(halves) / 2, big["loss"])


@pytest.mark.parametrize("chunked", [False, True])
def test_fully_masked_batch_gives_zero_with_zero_gradient(chunked: bool) -> None:
    data = batch(6)
    labels = torch.full((B, T), -100)
    h = data["hidden"].clone().requires_grad_(True)
    loss = DistillationLoss(LossConfig(weights={"kd": 1.0, "ce": 1.0}))
    if chunked:
        out = loss(
            labels, student_hidden=h, lm_head_weight=data["weight"], teacher=view(data["teacher"])
        )
    else:
        out = loss(labels, student_logits=h @ data["weight"].T, teacher=view(data["teacher"]))
    out["loss"].backward()
    assert out["loss"].item() == 0.0
    assert h.grad is not None
    assert torch.equal(h.grad, torch.zeros_like(h))


def test_single_token_sequence() -> None:
    logits = torch.randn(1, 1, V, dtype=torch.float64)
    teacher = torch.randn(1, 1, V, dtype=torch.float64)
    out = DistillationLoss(LossConfig())(
        torch.tensor([[3]]), student_logits=logits, teacher=view(teacher)
    )
    p, lq = torch.softmax(teacher[0, 0], -1), torch.log_softmax(logits[0, 0], -1)
    torch.testing.assert_close(out["kd"], (p * (p.log() - lq)).sum())


def test_bf16_inputs_give_float32_loss_close_to_float32_inputs() -> None:
    data = batch(7, dtype=torch.float32)
    logits = data["hidden"] @ data["weight"].T
    loss = DistillationLoss(LossConfig(weights={"kd": 1.0, "ce": 1.0}))
    ref = loss(
        data["labels"],
        student_logits=logits.bfloat16().float(),
        teacher=view(data["teacher"].bfloat16().float()),
    )
    out = loss(
        data["labels"], student_logits=logits.bfloat16(), teacher=view(data["teacher"].bfloat16())
    )
    assert out["loss"].dtype == torch.float32
    torch.testing.assert_close(out["loss"], ref["loss"])


def test_t2_scale_multiplies_the_kd_term_by_temperature_squared() -> None:
    data = batch(8)
    logits = data["hidden"] @ data["weight"].T
    kw = {"student_logits": logits, "teacher": view(data["teacher"])}
    on = DistillationLoss(LossConfig(temperature=3.0))(data["labels"], **kw)
    off = DistillationLoss(LossConfig(temperature=3.0, t2_scale=False))(data["labels"], **kw)
    torch.testing.assert_close(on["kd"], 9.0 * off["kd"])


def test_span_term_adds_ce_on_span_tokens_only() -> None:
    data = batch(9)
    logits = data["hidden"] @ data["weight"].T
    spans = {"tool_name": torch.zeros(B, T, dtype=torch.bool)}
    spans["tool_name"][1, 2:4] = True
    out = DistillationLoss(LossConfig(weights={"span_tool_name": 2.0}))(
        data["labels"], student_logits=logits, span_masks=spans
    )
    n = int((data["labels"] != -100).sum())
    ce = functional.cross_entropy(logits[1, 2:4], data["labels"][1, 2:4], reduction="sum")
    torch.testing.assert_close(out["span_tool_name"], ce / n)
    torch.testing.assert_close(out["loss"], 2.0 * ce / n)


def test_span_term_can_use_kd() -> None:
    data = batch(9)
    logits = data["hidden"] @ data["weight"].T
    spans = {"json_args": (data["labels"] != -100)}
    cfg = LossConfig(weights={"kd": 1.0, "span_json_args": 1.0}, span_loss="kd")
    out = DistillationLoss(cfg)(
        data["labels"], student_logits=logits, teacher=view(data["teacher"]), span_masks=spans
    )
    torch.testing.assert_close(out["span_json_args"], out["kd"])


def test_code_preference_is_small_when_target_wins_by_the_margin() -> None:
    labels = torch.tensor([[1, 2]])
    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 1] = 20.0
    logits[0, 1, 2] = -20.0
    spans = {"code_mode": torch.tensor([[True, True]])}
    cfg = LossConfig(weights={"code_pref": 1.0}, code_pref_margin=1.0)
    out = DistillationLoss(cfg)(labels, student_logits=logits, span_masks=spans)
    expected = (
        functional.softplus(torch.tensor(1.0 - 20.0))
        + functional.softplus(torch.tensor(1.0 + 20.0))
    ) / 2
    torch.testing.assert_close(out["code_pref"], expected)


def test_warmup_schedule_sets_the_weight_at_each_step() -> None:
    data = batch(10)
    logits = data["hidden"] @ data["weight"].T
    cfg = LossConfig(weights={"ce": LinearWarmup(0.0, 1.0, warmup_steps=10)})
    loss = DistillationLoss(cfg)
    at0 = loss(data["labels"], student_logits=logits, step=0)
    at5 = loss(data["labels"], student_logits=logits, step=5)
    assert float(at0["loss"]) == 0.0
    assert float(at0["ce"]) > 0.0
    torch.testing.assert_close(at5["loss"], 0.5 * at5["ce"])


def test_vocab_mismatch_raises_naming_both_sizes() -> None:
    with pytest.raises(ValueError, match=r"teacher has 20 ids and the student 13"):
        DistillationLoss(LossConfig())(
            batch()["labels"],
            student_logits=torch.randn(B, T, V),
            teacher=view(torch.randn(B, T, 20)),
        )


def test_vocab_truncate_compares_shared_ids() -> None:
    data = batch(11)
    logits = data["hidden"] @ data["weight"].T
    wide = torch.cat([data["teacher"], torch.randn(B, T, 3, dtype=torch.float64)], -1)
    out = DistillationLoss(LossConfig(vocab_policy="truncate"))(
        data["labels"], student_logits=logits, teacher=view(wide)
    )
    ref = DistillationLoss(LossConfig())(
        data["labels"], student_logits=logits, teacher=view(data["teacher"])
    )
    torch.testing.assert_close(out["kd"], ref["kd"])


def test_missing_teacher_for_kd_raises() -> None:
    with pytest.raises(ValueError, match=r"the KD term needs a teacher"):
        DistillationLoss(LossConfig())(batch()["labels"], student_logits=torch.randn(B, T, V))


def test_missing_student_raises() -> None:
    with pytest.raises(ValueError, match=r"pass student_logits"):
        DistillationLoss(LossConfig())(batch()["labels"])


def test_label_outside_vocabulary_raises() -> None:
    labels = torch.full((B, T), 40)
    with pytest.raises(ValueError, match=r"labels holds id 40, outside the student vocabulary"):
        DistillationLoss(LossConfig(weights={"ce": 1.0}))(
            labels, student_logits=torch.randn(B, T, V)
        )


def test_label_equal_to_the_vocabulary_size_raises() -> None:
    labels = torch.full((B, T), V)
    with pytest.raises(ValueError, match=rf"labels holds id {V}, outside the student vocabulary"):
        DistillationLoss(LossConfig(weights={"ce": 1.0}))(
            labels, student_logits=torch.randn(B, T, V)
        )


def test_negative_label_that_is_not_ignore_index_raises() -> None:
    labels = torch.full((B, T), -3)
    with pytest.raises(ValueError, match=r"labels holds id -3, outside the student vocabulary"):
        DistillationLoss(LossConfig(weights={"ce": 1.0}))(
            labels, student_logits=torch.randn(B, T, V)
        )


def test_labels_up_to_the_last_vocabulary_id_are_accepted() -> None:
    labels = torch.full((B, T), V - 1)
    labels[0, 0] = 0
    out = DistillationLoss(LossConfig(weights={"ce": 1.0}))(
        labels, student_logits=torch.randn(B, T, V)
    )
    assert torch.isfinite(out["loss"])


def test_shape_mismatch_raises_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"teacher covers positions \(2, 6\) but labels are"):
        DistillationLoss(LossConfig())(
            batch()["labels"],
            student_logits=torch.randn(B, T, V),
            teacher=view(torch.randn(B, T - 1, V)),
        )


def test_float_labels_raise() -> None:
    with pytest.raises(ValueError, match=r"labels must be an integer tensor"):
        DistillationLoss(LossConfig())(torch.zeros(B, T), student_logits=torch.randn(B, T, V))


def test_unknown_span_kind_raises() -> None:
    with pytest.raises(ValueError, match=r"span_masks has kind 'tools'"):
        DistillationLoss(LossConfig(weights={"ce": 1.0}))(
            batch()["labels"],
            student_logits=torch.randn(B, T, V),
            span_masks={"tools": torch.zeros(B, T, dtype=torch.bool)},
        )


def test_hidden_term_without_the_teacher_dim_raises() -> None:
    cfg = LossConfig.from_dict(
        {"weights": {"ce": 1.0, "hidden": 0.5}, "hidden": {"layer_map": [[1, 2]], "kind": "mse"}}
    )
    with pytest.raises(ValueError, match=r"needs student_dim and teacher_dim"):
        DistillationLoss(cfg, student_dim=H)


def test_hidden_term_is_added_with_its_weight() -> None:
    data = batch(12)
    cfg = LossConfig.from_dict(
        {"weights": {"ce": 1.0, "hidden": 0.5}, "hidden": {"layer_map": [[1, 2]], "kind": "mse"}}
    )
    loss = DistillationLoss(cfg, student_dim=H, teacher_dim=4).double()
    s_layers = [torch.randn(B, T, H, dtype=torch.float64) for _ in range(2)]
    t_layers = [torch.randn(B, T, 4, dtype=torch.float64) for _ in range(3)]
    out = loss(
        data["labels"],
        student_logits=data["hidden"] @ data["weight"].T,
        student_layers=s_layers,
        teacher=TeacherOutput(logits=data["teacher"], layers=tuple(t_layers), aligned="view"),
    )
    torch.testing.assert_close(out["loss"].double(), out["ce"] + 0.5 * out["hidden"].double())
    out["loss"].backward()
    assert loss.hidden is not None
    assert loss.hidden.projections[0].weight.grad is not None


def test_labels_that_are_not_two_dimensional_raise() -> None:
    with pytest.raises(ValueError, match=r"labels must be \[B, T\], got shape \(14,\)"):
        DistillationLoss(LossConfig(weights={"ce": 1.0}))(
            batch()["labels"].reshape(-1), student_logits=torch.randn(B * T, V)
        )


@pytest.mark.parametrize("teacher_layers", [None, ()])
def test_hidden_term_without_layers_on_both_sides_raises(teacher_layers) -> None:
    data = batch(3)
    cfg = LossConfig.from_dict(
        {"weights": {"ce": 1.0, "hidden": 0.5}, "hidden": {"layer_map": [[1, 2]], "kind": "mse"}}
    )
    loss = DistillationLoss(cfg, student_dim=H, teacher_dim=4).double()
    teacher = (
        None
        if teacher_layers is None
        else TeacherOutput(logits=data["teacher"], layers=teacher_layers, aligned="view")
    )
    with pytest.raises(ValueError, match=r"the 'hidden' term needs student_layers"):
        loss(
            data["labels"],
            student_logits=data["hidden"] @ data["weight"].T,
            student_layers=[torch.randn(B, T, H, dtype=torch.float64) for _ in range(2)],
            teacher=teacher,
        )


def test_a_teacher_output_not_in_the_next_token_view_raises() -> None:
    data = batch(4)
    teacher = TeacherOutput(logits=data["teacher"], aligned="logits")
    with pytest.raises(ValueError, match=r"aligned to 'logits'; pass teacher.next_token\(\)"):
        DistillationLoss(LossConfig())(
            data["labels"], student_logits=data["hidden"] @ data["weight"].T, teacher=teacher
        )


def test_no_grad_chunked_call_computes_values_only() -> None:
    data = batch(13)
    h = data["hidden"].clone().requires_grad_(True)
    with torch.no_grad():
        out = DistillationLoss(LossConfig())(
            data["labels"],
            student_hidden=h,
            lm_head_weight=data["weight"],
            teacher=view(data["teacher"]),
        )
    assert not out["loss"].requires_grad
    assert float(out["loss"]) > 0.0


def test_chunked_path_on_a_real_tiny_llama_matches_its_logits(tiny_llama_dir) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = torch.randint(4, model.config.vocab_size, (2, 9))
    out = model(ids, output_hidden_states=True)
    labels = ids[:, 1:]
    teacher = torch.randn(2, 8, model.config.vocab_size)
    loss = DistillationLoss(LossConfig(weights={"kd": 1.0, "ce": 1.0}, chunk_size=5))
    dense = loss(labels, student_logits=out.logits[:, :-1], teacher=view(teacher))
    chunk = loss(
        labels,
        student_hidden=out.hidden_states[-1][:, :-1],
        lm_head_weight=model.lm_head.weight,
        teacher=view(teacher),
    )
    torch.testing.assert_close(chunk["loss"], dense["loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("teacher_kind", ["dense", "topk", "none"])
def test_chunked_and_dense_paths_return_the_same_keys_for_a_fully_masked_batch(teacher_kind):
    data = batch(21)
    weights = {"ce": 1.0, "span_tool_name": 0.5, "code_pref": 0.2}
    if teacher_kind != "none":
        weights["kd"] = 1.0
    cfg = LossConfig(weights=weights, chunk_size=4)
    masked = torch.full_like(data["labels"], -100)
    top = torch.log_softmax(data["teacher"], dim=-1).topk(3, dim=-1)
    teacher = {
        "dense": view(data["teacher"]),
        "topk": TeacherOutput(ids=top.indices, logprobs=top.values, aligned="view"),
        "none": None,
    }[teacher_kind]
    spans = {"tool_name": torch.ones_like(masked, dtype=torch.bool)}
    loss = DistillationLoss(cfg)
    h = data["hidden"].clone().requires_grad_(True)
    chunked = loss(
        masked,
        student_hidden=h,
        lm_head_weight=data["weight"],
        teacher=teacher,
        span_masks=spans,
    )
    dense = loss(masked, student_logits=h @ data["weight"].T, teacher=teacher, span_masks=spans)
    assert sorted(chunked) == sorted(dense) == sorted([*weights, "loss"])
    assert all(float(v.detach()) == 0.0 for v in chunked.values())
    chunked["loss"].backward()
    assert h.grad is not None
    assert float(h.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_callers_teacher_logits_are_left_untouched(temperature):
    # The loss turns each chunk's teacher rows into log-probs in place: rows are copies.
    data = batch(22)
    teacher = data["teacher"].clone()
    loss = DistillationLoss(LossConfig(temperature=temperature, chunk_size=3))
    loss(
        data["labels"],
        student_hidden=data["hidden"],
        lm_head_weight=data["weight"],
        teacher=view(teacher),
    )
    assert torch.equal(teacher, data["teacher"])


@pytest.mark.parametrize("bad", [V, V + 5, -3])
def test_the_error_names_the_label_outside_the_vocabulary_among_valid_ones(bad: int) -> None:
    labels = batch(14)["labels"]
    labels[1, 2] = bad
    with pytest.raises(ValueError, match=rf"labels holds id {bad}, outside the student vocabulary"):
        DistillationLoss(LossConfig(weights={"ce": 1.0}))(
            labels, student_logits=torch.randn(B, T, V)
        )


@pytest.mark.parametrize("given", ["student_hidden", "lm_head_weight"])
def test_the_chunked_path_needs_both_hidden_states_and_the_lm_head(given: str) -> None:
    data = batch(15)
    inputs = {"student_hidden": data["hidden"], "lm_head_weight": data["weight"]}
    with pytest.raises(LossArgumentError, match=r"pass student_logits"):
        DistillationLoss(LossConfig(weights={"ce": 1.0}))(data["labels"], **{given: inputs[given]})


def test_a_hidden_term_weighted_zero_builds_no_projection_and_reports_nothing() -> None:
    cfg = LossConfig.from_dict(
        {"weights": {"ce": 1.0, "hidden": 0.0}, "hidden": {"layer_map": [[1, 2]], "kind": "mse"}}
    )
    loss_fn = DistillationLoss(cfg)  # no hidden sizes needed for a term that never counts
    assert loss_fn.hidden is None
    assert list(loss_fn.parameters()) == []
    data = batch(16)
    out = loss_fn(data["labels"], student_logits=data["teacher"])
    assert set(out) == {"ce", "loss"}
    keep = data["labels"] != -100
    expected = functional.cross_entropy(data["teacher"][keep], data["labels"][keep])
    torch.testing.assert_close(out["loss"], expected)
