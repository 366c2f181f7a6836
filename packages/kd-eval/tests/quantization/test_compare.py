"""The comparison of fp32, post-training-quantized and QAT students (kd_eval.quantization)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kd_eval.errors import ConfigError, MetricInputError, VocabularyMismatchError
from kd_eval.loading.models import load_model
from kd_eval.quantization.compare import (
    compare_arms,
    load_arms,
    paired_difference,
    recovered_share,
    scheme_of,
)
from kd_eval.report.document import new_report, validate
from kd_eval.report.html import render_html
from kd_eval.report.plots import quantization_png
from kd_train.data.schema import KDRecord
from kd_train.trainer.qat import (
    post_training_quantize,
    prepare_qat,
    quantization_record,
    write_quantization,
)
from kd_train.trainer.train_config import QATConfig

pytest.importorskip("torchao", reason="QAT students need the qat extra (torchao)")

RECORDS = [
    KDRecord(id="a", prompt="It is", completion=" certain, ask again later."),
    KDRecord(id="b", prompt="Ask again", completion=" later, it is decidedly so."),
    KDRecord(id="c", prompt="Call", completion=' {"name": "get_weather"}'),
]


def save_qat_student(source: Path, out: Path, config: QATConfig) -> Path:
    """The float student with the record a QAT run saves (no training: its PTQ numbers)."""
    shutil.copytree(source, out)
    loaded = load_model(out)
    prepare_qat(loaded.model, config)
    write_quantization(out, quantization_record(loaded.model, config))
    return out


def est(value: float, low: float | None = None, high: float | None = None) -> dict[str, float]:
    return {"value": value, "low": value if low is None else low, "high": high or value}


def test_recovered_is_the_share_of_ptqs_loss_that_qat_wins_back() -> None:
    fp32 = {"forward_kl": est(0.20), "top1_agreement": est(0.90)}
    ptq = {"forward_kl": est(0.30), "top1_agreement": est(0.80), "kl_vs_fp32": est(0.1, 0.02)}
    qat = {"forward_kl": est(0.225), "top1_agreement": est(0.88)}
    assert recovered_share(fp32, ptq, qat, "forward_kl") == (pytest.approx(0.75), None)
    assert recovered_share(fp32, ptq, qat, "top1_agreement") == (pytest.approx(0.8), None)


@pytest.mark.parametrize("low", [0.0, -0.01])
def test_recovered_is_null_with_the_reason_unless_ptqs_loss_is_above_zero(low: float) -> None:
    fp32, qat = {"forward_kl": est(0.2)}, {"forward_kl": est(0.2)}
    ptq = {"forward_kl": est(0.3), "kl_vs_fp32": est(0.1, low)}
    value, reason = recovered_share(fp32, ptq, qat, "forward_kl")
    assert value is None
    assert reason is not None
    assert "is not above 0" in reason


def test_recovered_is_null_when_ptq_equals_fp32_on_the_metric() -> None:
    fp32, qat = {"top1_agreement": est(0.9)}, {"top1_agreement": est(0.8)}
    ptq = {"top1_agreement": est(0.9), "kl_vs_fp32": est(0.1, 0.05)}
    assert recovered_share(fp32, ptq, qat, "top1_agreement") == (
        None,
        "PTQ's top1_agreement equals fp32's: nothing to recover",
    )


def test_the_paired_difference_removes_the_spread_between_examples() -> None:
    base = [0.1, 0.9, 2.5, 0.4]
    shifted = [b + 0.05 for b in base]
    diff = paired_difference(shifted, base, resamples=300)
    assert diff.value == pytest.approx(0.05)
    assert diff.high - diff.low == pytest.approx(0.0, abs=1e-12)  # unpaired it would be wide
    with pytest.raises(MetricInputError, match="same examples"):
        paired_difference(shifted[:3], base)


def test_the_scheme_comes_from_the_qat_student_or_the_flags(tiny_llama_dir, tmp_path) -> None:
    qat = save_qat_student(tiny_llama_dir, tmp_path / "qat", QATConfig(scheme="int4"))
    config, source = scheme_of(qat, None, None)
    assert (config.scheme, config.weight_group_size, source) == ("int4", 32, "qat")
    assert scheme_of(qat, "int4", 32)[0] == config
    config, source = scheme_of(None, "int8", None)
    assert (config.scheme, source) == ("int8", "flags")


@pytest.mark.parametrize(
    ("which", "flags", "message"),
    [
        ("float", (None, None), "has no quantization.json, so it is not a QAT student"),
        ("ptq", (None, None), "origin 'ptq'"),
        ("qat", ("int8", None), "contradicts the QAT student's quantization.json"),
        (None, (None, None), "give the QAT student"),
        (None, ("int8", 32), "applies to scheme 'int4' only"),
    ],
)
def test_a_scheme_that_cannot_be_known_is_refused(
    tiny_llama_dir, tmp_path, which, flags, message
) -> None:
    dirs = {
        "float": tiny_llama_dir,
        "ptq": post_training_quantize(tiny_llama_dir, tmp_path / "p", QATConfig(scheme="int4")),
        "qat": save_qat_student(tiny_llama_dir, tmp_path / "q", QATConfig(scheme="int4")),
        None: None,
    }
    with pytest.raises(ConfigError, match=message):
        scheme_of(dirs[which], *flags)


def test_arms_of_other_vocabularies_or_a_quantized_fp32_are_refused(
    tiny_llama_dir, small_vocab_model_dir, tmp_path
) -> None:
    int8 = QATConfig(scheme="int8")
    other = save_qat_student(small_vocab_model_dir, tmp_path / "other", int8)
    with pytest.raises(VocabularyMismatchError, match=r"--fp32 .* and --qat .* different vocab"):
        load_arms(tiny_llama_dir, other, int8)
    with pytest.raises(ConfigError, match=r"--fp32 .* carries quantization\.json"):
        load_arms(other, None, int8)


def test_ptq_applies_the_qat_students_scheme_to_the_fp32_student(
    tiny_llama_dir, tiny_teacher_dir, tmp_path
) -> None:
    # A QAT student that never trained is its own PTQ: the two arms must agree exactly.
    config = QATConfig(scheme="int4")
    qat = save_qat_student(tiny_llama_dir, tmp_path / "qat", config)
    arms = load_arms(tiny_llama_dir, qat, scheme_of(qat, None, None)[0])
    compared = compare_arms(load_model(tiny_teacher_dir), arms, RECORDS, resamples=200)
    rows = compared["examples"]
    assert [row["ptq"] for row in rows] == [row["qat"] for row in rows]
    assert [row["ptq"] for row in rows] != [row["fp32"] for row in rows]
    figures = compared["arms"]
    assert figures["fp32"]["kl_vs_fp32"] is None
    assert figures["ptq"]["kl_vs_fp32"]["value"] == pytest.approx(
        sum(row["ptq"] - row["fp32"] for row in rows) / len(rows)
    )
    for arm in figures.values():
        kl = arm["forward_kl"]
        assert kl["low"] <= kl["value"] <= kl["high"]
    section = {
        "teacher": "t", "data": "d", "n_examples": 3,
        "scheme": {"scheme": "int4", "group_size": 32, "source": "qat"},
        **compared,
    }  # fmt: skip
    for arm in section["arms"].values():
        arm["onnx"] = None
    validate(new_report("q", quantization=section), "test")
    assert quantization_png(section)[:4] == b"\x89PNG"
    assert "<h2>Quantization</h2>" in render_html(new_report("q", quantization=section))
