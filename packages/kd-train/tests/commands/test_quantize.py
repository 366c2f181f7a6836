"""``kd-train quantize``: post-training quantization of a float student, through ``main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kd_train.cli import main
from kd_train.commands.quantize import GROUP_SIZES, SCHEME_NAMES
from kd_train.trainer.qat import (
    QUANTIZATION_FILE,
    QuantizationRecordError,
    load_fake_quantized,
    post_training_quantize,
    read_quantization,
)
from kd_train.trainer.train_config import QAT_GROUP_SIZES, QAT_SCHEMES, QATConfig
from transformers import AutoModelForCausalLM

pytest.importorskip("torchao", reason="QAT needs the qat extra (torchao)")


def test_the_flag_choices_are_the_configs() -> None:
    assert (SCHEME_NAMES, GROUP_SIZES) == (QAT_SCHEMES, QAT_GROUP_SIZES)


def test_quantize_writes_a_byte_identical_copy_with_a_ptq_record(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ptq"
    argv = ["quantize", str(tiny_llama_dir), str(out), "--scheme", "int4", "--group-size", "32"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    record = read_quantization(out)
    assert record is not None
    assert (record.origin, record.scheme, record.group_size) == ("ptq", "int4", 32)
    assert summary["layers"] == len(record.layers) > 0
    for source in tiny_llama_dir.iterdir():
        assert (out / source.name).read_bytes() == source.read_bytes()
    assert read_quantization(tiny_llama_dir) is None  # the float student is left alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left


def test_the_ptq_copy_loads_as_the_fake_quantized_float_student(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    out = post_training_quantize(tiny_llama_dir, tmp_path / "ptq", QATConfig(scheme="int8"))
    model = AutoModelForCausalLM.from_pretrained(out)
    float_model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    record = load_fake_quantized(model, out)
    assert record is not None
    assert record.origin == "ptq"
    ids = torch.arange(3, 19)[None]
    assert not model(input_ids=ids).logits.equal(float_model(input_ids=ids).logits)


def test_a_student_that_carries_a_record_is_refused_in_one_line(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ptq = post_training_quantize(tiny_llama_dir, tmp_path / "ptq", QATConfig(scheme="int8"))
    capsys.readouterr()  # the loading bar of the copy above
    argv = ["quantize", str(ptq), str(tmp_path / "again"), "--scheme", "int8", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "quantized already" in err
    assert QUANTIZATION_FILE in err
    assert not (tmp_path / "again").exists()


def test_a_group_size_with_int8_is_refused_naming_the_key(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["quantize", str(tiny_llama_dir), str(tmp_path / "o"), "--scheme", "int8"]
    assert main([*argv, "--group-size", "32"]) == 2
    assert "qat.group_size: applies to scheme 'int4' only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuantizationRecordError, match=r"no config\.json"):
        post_training_quantize(tmp_path, tmp_path / "out", QATConfig(scheme="int8"))
