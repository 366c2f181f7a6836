"""QAT: torchao fake quantization of the student, switched on at ``qat.start_step``."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from kd_train.testing import tiny_llama_config
from kd_train.trainer.config import RunConfigError, parse_config
from kd_train.trainer.loop import train
from kd_train.trainer.qat import (
    QUANTIZATION_FILE,
    QATUnavailableError,
    QuantizationRecordError,
    is_fake_quantized,
    load_fake_quantized,
    prepare_qat,
    quantizable_layers,
    read_quantization,
    switch_at_step,
    weight_qparams,
)
from kd_train.trainer.train_config import QATConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

pytest.importorskip("torchao", reason="QAT needs the qat extra (torchao)")


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows]


@pytest.fixture
def student(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir)


@pytest.mark.parametrize(("scheme", "group"), [("int8", None), ("int4", 32)])
def test_prepare_swaps_every_linear_but_the_head_and_keeps_the_parameters(student, scheme, group):
    params = {name: id(p) for name, p in student.named_parameters()}
    names = set(student.state_dict())
    layers = prepare_qat(student, QATConfig(scheme=scheme, group_size=group))
    assert layers == sorted(quantizable_layers(student))
    assert "lm_head" not in layers
    assert all(hasattr(student.get_submodule(n), "weight_fake_quantizer") for n in layers)
    assert not hasattr(student.lm_head, "weight_fake_quantizer")
    assert {name: id(p) for name, p in student.named_parameters()} == params
    assert set(student.state_dict()) == names


def test_weight_gradient_passes_straight_through_inside_the_clamp_range(student):
    prepare_qat(student, QATConfig(scheme="int4", group_size=32))
    layer = student.model.layers[0].mlp.up_proj
    _, scale = weight_qparams(layer)
    weight = layer.weight.detach()
    upstream = torch.randn_like(weight)
    (layer.weight_fake_quantizer(layer.weight) * upstream).sum().backward()
    # round(w / s) is clamped to [-8, 7] only at the largest |w| of a group (round(7.5) = 8);
    # that element is also the one the scale max|w| / 7.5 depends on. Everywhere else the
    # gradient is the upstream one, unchanged: round passes it straight through.
    groups = weight.abs().reshape(weight.shape[0], -1, 32)
    extreme = (groups == groups.amax(dim=-1, keepdim=True)).reshape(weight.shape)
    # (s · (1/s) is 1 up to one float rounding)
    torch.testing.assert_close(layer.weight.grad[~extreme], upstream[~extreme], rtol=3e-7, atol=0)
    assert not torch.equal(layer.weight.grad[extreme], upstream[extreme])
    assert int(extreme.sum()) == scale.numel()


def test_activation_gradient_passes_straight_through(student):
    prepare_qat(student, QATConfig(scheme="int8"))
    quantizer = student.model.layers[0].self_attn.q_proj.activation_fake_quantizer
    x = torch.randn(2, 5, 32, requires_grad=True)
    upstream = torch.randn(2, 5, 32)
    (quantizer(x) * upstream).sum().backward()
    # asymmetric per token: nothing is clamped; only a token's min and max, which its scale
    # and zero point are computed from, also get the gradient through them
    extreme = (x == x.amax(-1, keepdim=True)) | (x == x.amin(-1, keepdim=True))
    torch.testing.assert_close(x.grad[~extreme], upstream[~extreme], rtol=3e-7, atol=0)
    assert int(extreme.sum()) == 2 * 2 * 5


@pytest.mark.parametrize(("scheme", "group"), [("int8", None), ("int4", 32), ("int4", 64)])
def test_observed_scales_round_trip_to_the_fake_quantized_weight(scheme, group):
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_config(tiny_llama_config(64, hidden_size=64))
    prepare_qat(student, QATConfig(scheme=scheme, group_size=group))
    for layer in (student.model.layers[1].self_attn.o_proj, student.model.layers[0].mlp.down_proj):
        q, scale = weight_qparams(layer)
        q_min, q_max = (-128, 127) if scheme == "int8" else (-8, 7)
        assert q.dtype == torch.int8
        assert q_min <= int(q.min())
        assert int(q.max()) <= q_max
        width = layer.weight.shape[1] if group is None else group
        assert scale.shape == (layer.weight.shape[0], layer.weight.shape[1] // width)
        dequantized = q.float() * scale.repeat_interleave(width, dim=1)
        with torch.no_grad():
            assert torch.equal(dequantized, layer.weight_fake_quantizer(layer.weight))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"scheme": "int2"}, "qat.scheme: 'int2' is not allowed (allowed: int8, int4)"),
        ({"scheme": "int8", "group_size": 32}, "qat.group_size: applies to scheme 'int4' only"),
        ({"scheme": "int4", "group_size": 48}, "qat.group_size: 48 is not allowed"),
        ({"scheme": "int8", "start_step": -1}, "qat.start_step: must be >= 0"),
        (
            {"scheme": "int8", "every": 3},
            "qat.every: unknown key (allowed: group_size, scheme, start_step)",
        ),
    ],
)
def test_bad_qat_section_is_refused_naming_the_key(make_config, section, message):
    with pytest.raises(RunConfigError) as caught:
        parse_config(make_config(qat=section))
    assert message in str(caught.value)


def test_qat_with_fsdp_is_refused(make_config):
    with pytest.raises(RunConfigError, match=r"qat: not supported with distributed\.strategy"):
        parse_config(make_config(qat={"scheme": "int8"}, distributed={"strategy": "fsdp"}))


def test_a_group_size_that_does_not_divide_a_layer_is_refused_naming_it(student):
    student.model.layers[0].mlp.down_proj = torch.nn.Linear(48, 32, bias=False)
    with pytest.raises(ValueError, match=r"qat.group_size: 32 does not divide .*down_proj \(48\)"):
        prepare_qat(student, QATConfig(scheme="int4", group_size=32))


def test_qat_switches_on_at_start_step_and_the_student_is_saved_with_its_record(make_config):
    cfg = parse_config(make_config(qat={"scheme": "int4", "start_step": 3}))
    result = train(cfg, progress=False)
    assert result.state.qat
    record = read_quantization(result.student_dir)
    assert record is not None
    assert (record.scheme, record.group_size) == ("int4", 32)
    reloaded = AutoModelForCausalLM.from_pretrained(result.student_dir)
    assert not is_fake_quantized(reloaded)  # plain float weights for any loader
    assert load_fake_quantized(reloaded, result.student_dir) is not None
    assert is_fake_quantized(reloaded)


def test_the_loss_changes_exactly_at_start_step(make_config, tmp_path):
    plain = losses(train(parse_config(make_config()), progress=False).run_dir)
    cfg = make_config(qat={"scheme": "int8", "start_step": 3}, output_dir=str(tmp_path / "q"))
    quantized = losses(train(parse_config(cfg), progress=False).run_dir)
    assert quantized[:3] == plain[:3]
    assert quantized[3] != plain[3]


def test_a_run_that_ends_before_start_step_saves_a_float_student(make_config):
    result = train(
        parse_config(make_config(qat={"scheme": "int8", "start_step": 50})), progress=False
    )
    assert not result.state.qat
    assert not (result.student_dir / QUANTIZATION_FILE).exists()


@pytest.mark.parametrize("rollback_to", [2, 4])
def test_resume_across_the_switch_reproduces_the_uninterrupted_run(make_config, rollback_to):
    cfg = parse_config(
        make_config(
            qat={"scheme": "int8", "start_step": 3},
            train={"checkpoint_every": 2, "keep_checkpoints": 3},
        )
    )
    full = train(cfg, progress=False)
    reference = losses(full.run_dir)
    final = load_file(str(full.student_dir / "model.safetensors"))
    for step in (6, 4)[: 2 if rollback_to == 2 else 1]:
        shutil.rmtree(full.run_dir / "checkpoints" / f"step-{step:08d}")
    shutil.rmtree(full.student_dir)
    resumed = train(cfg, resume=True, progress=False)
    assert losses(resumed.run_dir) == reference
    again = load_file(str(resumed.student_dir / "model.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_the_checkpoint_records_whether_qat_is_on(make_config):
    cfg = make_config(
        qat={"scheme": "int8", "start_step": 3},
        train={"checkpoint_every": 2, "keep_checkpoints": 3},
    )
    run = train(parse_config(cfg), progress=False).run_dir
    on = {
        path.name: json.loads((path / "trainer_state.json").read_text())["state"]["qat"]
        for path in sorted((run / "checkpoints").iterdir())
    }
    assert on == {"step-00000002": False, "step-00000004": True, "step-00000006": True}


def test_a_malformed_quantization_record_is_refused_naming_the_field(tmp_path):
    (tmp_path / QUANTIZATION_FILE).write_text(
        json.dumps({"format": "kd-quantization/1", "scheme": "int4", "group_size": 8, "layers": []})
    )
    with pytest.raises(QuantizationRecordError, match="group_size: 8 does not fit scheme 'int4'"):
        read_quantization(tmp_path)
    (tmp_path / QUANTIZATION_FILE).write_text("{not json")
    with pytest.raises(QuantizationRecordError, match="not a readable JSON file"):
        read_quantization(tmp_path)


def test_without_torchao_the_error_names_the_extra(student, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import now fails
    with pytest.raises(QATUnavailableError, match=r"pip install kd-train\[qat\]"):
        prepare_qat(student, QATConfig(scheme="int8"))


def test_a_checkpoint_with_qat_on_needs_the_qat_section(student):
    with pytest.raises(QuantizationRecordError, match="written with QAT on"):
        switch_at_step(student, None, 5, on=True)
    assert switch_at_step(student, None, 5, on=False) is False


def test_weight_qparams_refuses_a_float_layer(student):
    with pytest.raises(QuantizationRecordError, match="not a fake-quantized layer"):
        weight_qparams(student.model.layers[0].mlp.up_proj)
