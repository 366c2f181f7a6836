"""``kd-eval quantization`` through ``kd_eval.cli.main``: the report, the table, the errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from kd_eval.cli import main
from kd_eval.loading.models import load_model
from kd_eval.report.document import read_report
from kd_train.trainer.qat import prepare_qat, quantization_record, write_quantization
from kd_train.trainer.train_config import QATConfig

pytest.importorskip("torchao", reason="QAT students need the qat extra (torchao)")


def qat_student(source: Path, out: Path, scheme: str = "int8") -> Path:
    """``source`` with the record a QAT run writes (untrained: its numbers are PTQ's)."""
    shutil.copytree(source, out)
    loaded = load_model(out)
    config = QATConfig(scheme=scheme)
    prepare_qat(loaded.model, config)
    write_quantization(out, quantization_record(loaded.model, config))
    return out


def test_the_three_arms_are_compared_with_the_task_and_the_onnx_figures(
    tmp_path, write_set, eightball_records, tiny_teacher_dir, tiny_llama_dir, tiny_onnx, capsys
) -> None:
    qat = qat_student(tiny_llama_dir, tmp_path / "qat")
    out, png = tmp_path / "q.json", tmp_path / "q.png"
    argv = ["quantization", "--teacher", str(tiny_teacher_dir), "--fp32", str(tiny_llama_dir),
            "--qat", str(qat), "--data", str(write_set(eightball_records[:3])),
            "--classify", "8ball", "--onnx", f"ptq={tiny_onnx}", "--length", "4", "--runs", "2",
            "--resamples", "100", "--out", str(out), "--png", str(png),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 held-out records; scheme int8 from qat" in printed
    assert "recovered forward_kl:" in printed
    section = read_report(out)["quantization"]  # the report schema holds
    assert list(section["arms"]) == ["fp32", "ptq", "qat"]
    for arm in section["arms"].values():
        assert arm["task"]["kind"] == "classification"
        assert arm["task"]["n"] == 3
        assert math.isfinite(arm["forward_kl"]["value"])
    assert section["arms"]["fp32"]["onnx"] is None  # not given: not guessed
    onnx = section["arms"]["ptq"]["onnx"]
    assert (onnx["length"], onnx["runs"], onnx["threads"]) == (4, 2, 1)
    assert onnx["weight_bytes"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert [r["ptq"] for r in section["examples"]] == [r["qat"] for r in section["examples"]]
    recovered = section["recovered"]["forward_kl"]  # QAT == PTQ here: nothing recovered
    if recovered["value"] is None:
        assert "is not above 0" in recovered["reason"]
    else:
        assert recovered["value"] == 0.0


def test_without_a_qat_student_the_scheme_flag_gives_ptq(
    tmp_path, write_set, eightball_records, tiny_teacher_dir, tiny_llama_dir, capsys
) -> None:
    out = tmp_path / "q.json"
    argv = ["quantization", "--teacher", str(tiny_teacher_dir), "--fp32", str(tiny_llama_dir),
            "--scheme", "int4", "--data", str(write_set(eightball_records[:2])),
            "--resamples", "50", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    section = read_report(out)["quantization"]
    assert section["scheme"] == {"scheme": "int4", "group_size": 32, "source": "flags"}
    assert list(section["arms"]) == ["fp32", "ptq"]
    assert section["recovered"]["forward_kl"] == {
        "value": None,
        "reason": "no QAT student given (--qat)",
    }
    assert section["arms"]["ptq"]["kl_vs_fp32"]["value"] != 0.0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-record", "has no quantization.json, so it is not a QAT student"),
        ("vocab", "have different vocabularies"),
        ("missing-onnx", "--onnx ptq="),
        ("bad-name", "'int4' is not an arm; use one of fp32, ptq, qat"),
    ],
)
def test_hostile_input_exits_2_with_one_line(
    case, message, tmp_path, write_set, eightball_records, tiny_teacher_dir, tiny_llama_dir,
    small_vocab_model_dir, tiny_onnx, capsys,
) -> None:  # fmt: skip
    argv = ["quantization", "--teacher", str(tiny_teacher_dir), "--fp32", str(tiny_llama_dir),
            "--data", str(write_set(eightball_records[:2])), "--resamples", "20",
            "--out", str(tmp_path / "q.json"), "--no-progress"]  # fmt: skip
    extra = {
        "no-record": ["--qat", str(tiny_llama_dir)],
        "vocab": ["--qat", str(qat_student(small_vocab_model_dir, tmp_path / "other"))],
        "missing-onnx": ["--scheme", "int8", "--onnx", f"ptq={tmp_path / 'none.onnx'}"],
        "bad-name": ["--scheme", "int8", "--onnx", f"int4={tiny_onnx}"],
    }[case]
    capsys.readouterr()
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("kd-eval: error: ")
    assert message in err
    assert not (tmp_path / "q.json").exists()
