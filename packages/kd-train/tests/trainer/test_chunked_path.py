"""The trainer's chunked loss path against the dense reference, and what it never builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from kd_train.trainer import parse_config, train
from kd_train.trainer.forward import Distiller


def losses(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("teacher", [{}, {"topk": 6}])
def test_chunked_and_dense_training_agree_step_by_step_over_20_steps(make_config, teacher):
    loss = {
        "weights": {"kd": 1.0, "ce": 0.5, "span_tool_name": 0.3, "span_json_args": 0.2},
        "divergence": "jsd",
        "temperature": 2.0,
        "chunk_size": 16,  # several chunks per micro-batch
    }
    cfg = make_config(
        loss=loss,
        teacher=teacher,
        train={"max_steps": 20, "batch_size": 4, "grad_accum": 2, "eval_every": 10},
    )
    chunked = train(parse_config(cfg), progress=False)
    cfg["output_dir"] += "-dense"
    dense = train(parse_config(cfg), progress=False, dense_reference=True)
    a, b = losses(chunked.run_dir), losses(dense.run_dir)
    assert len(a) == len(b) == 20
    for x, y in zip(a, b, strict=True):
        assert sorted(x) == sorted(y)
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=0.0), x["step"]
        for key in ("kd", "ce", "span_tool_name", "span_json_args", "eval_loss"):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=0.0, abs=1e-6), (x["step"], key)
    assert a[-1]["loss"] < a[0]["loss"]  # it trained


def test_the_trainer_never_builds_the_students_full_logits(make_config, monkeypatch):
    # The lm_head module is never called on the chunked path: the loss multiplies chunks of
    # hidden states by its weight. Calling it would build [B, T, V].
    cfg = parse_config(make_config(train={"max_steps": 2, "batch_size": 4}))
    calls: list[tuple[int, ...]] = []
    original = torch.nn.Linear.forward

    def spy(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        out = original(self, x)
        if out.shape[-1] >= 300:  # only the tiny models' vocabulary-sized outputs
            calls.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    train(cfg, progress=False)
    # the logits_split probes (student and teacher) run one [1, 8] sequence each
    assert calls
    assert all(shape[:2] == (1, 8) for shape in calls), calls


def test_a_student_whose_logits_are_not_its_head_falls_back_to_dense(tiny_llama_dir):
    from kd_train.losses import DistillationLoss, LossConfig
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert not Distiller(student, DistillationLoss(LossConfig())).dense
    student.config.logit_scale = 2.0
    original = student.forward

    def scaled(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out

    student.forward = scaled  # a model that scales its logits after the head
    assert Distiller(student, DistillationLoss(LossConfig())).dense


@pytest.mark.parametrize("dense", [False, True])
def test_the_distillers_ce_is_the_models_own_shifted_loss(tiny_llama_dir, dense):
    from kd_train.data import collate, encode_records, read_records
    from kd_train.data.tokenization import TokenizeConfig
    from kd_train.losses import DistillationLoss, LossConfig
    from kd_train.pipelines.toydata import tool_call_records, write_jsonl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    path = write_jsonl(Path(str(tiny_llama_dir)).parent / "ce.jsonl", tool_call_records(4))
    examples = list(encode_records(read_records(path), tok, TokenizeConfig(max_length=48)))
    batch = collate(examples, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        reference = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
        distiller = Distiller(model, DistillationLoss(LossConfig(weights={"ce": 1.0})), dense=dense)
        n_items = float((batch.labels[:, 1:] != -100).sum())
        ours = distiller(batch, None, n_items)["loss"]
    assert distiller.dense == dense
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def tool_call_batch(tiny_llama_dir: Any) -> Any:
    from kd_train.data import collate, encode_records, read_records
    from kd_train.data.tokenization import TokenizeConfig
    from kd_train.pipelines.toydata import tool_call_records, write_jsonl
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    path = write_jsonl(Path(str(tiny_llama_dir)).parent / "spans.jsonl", tool_call_records(4))
    examples = list(encode_records(read_records(path), tok, TokenizeConfig(max_length=48)))
    return collate(examples, pad_token_id=tok.pad_token_id)


def distiller_of(tiny_llama_dir: Any, weights: dict[str, Any], dense: bool = False) -> Distiller:
    from kd_train.losses import DistillationLoss, LossConfig
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    return Distiller(student, DistillationLoss(LossConfig(weights=weights)), dense=dense)


@pytest.mark.parametrize("dense", [False, True])
def test_only_the_dense_path_runs_the_students_head_on_every_position(tiny_llama_dir, dense):
    batch = tool_call_batch(tiny_llama_dir)
    distiller = distiller_of(tiny_llama_dir, {"ce": 1.0}, dense=dense)
    shapes: list[tuple[int, ...]] = []
    head = distiller.student.get_output_embeddings()
    head.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    with torch.no_grad():
        distiller(batch, None, 1.0)
    full = (*batch.input_ids.shape, head.weight.shape[0])
    assert (full in shapes) == dense


def test_the_step_reaches_the_losss_schedule(tiny_llama_dir):
    batch = tool_call_batch(tiny_llama_dir)
    ce = {"start": 0.0, "end": 1.0, "warmup_steps": 0, "start_step": 5}
    distiller = distiller_of(tiny_llama_dir, {"ce": ce})
    with torch.no_grad():
        before = distiller(batch, None, 1.0, step=2)["loss"]
        after = distiller(batch, None, 1.0, step=9)["loss"]
        unstepped = distiller(batch, None, 1.0)["loss"]  # no step: the loss's own default, 0
    assert float(before) == 0.0
    assert float(after) > 0.0
    assert float(unstepped) == 0.0


def test_span_masks_reach_the_span_terms(tiny_llama_dir):
    batch = tool_call_batch(tiny_llama_dir)
    assert batch.span_masks["tool_name"].any()
    distiller = distiller_of(tiny_llama_dir, {"span_tool_name": 1.0})
    with torch.no_grad():
        out = distiller(batch, None, 1.0)
    assert float(out["span_tool_name"]) > 0.0
    assert float(out["loss"]) == pytest.approx(float(out["span_tool_name"]))


def test_checkpoints_hold_the_student_alone_unless_the_loss_learns(tiny_llama_dir):
    plain = distiller_of(tiny_llama_dir, {"kd": 1.0})
    assert plain.trainable() is plain.student
