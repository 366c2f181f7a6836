"""fp32 vs post-training-quantized vs QAT students of one run, through the command lines.

``kd-train distill`` twice on the toy data (float, and with a ``qat`` int4 section from step
2), ``kd-train quantize`` of the float student (PTQ, same scheme), ``kd-convert export`` of
the three to ONNX, then ``kd-eval quantization`` with the three ONNX files: every arm is in
the report with finite figures whose intervals hold them, the quantized exports weigh less
than the float one, and PTQ is not the float student under another name.
"""

import math

import pytest
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl

from tests.e2e.stages import read_json, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
pytest.importorskip("torchao", reason="QAT needs the qat extra (torchao)")

SCHEME = {"scheme": "int4", "group_size": 32}


def distill(tmp_path, name, student, teacher, data, qat=None):
    cfg = {
        "student": {"path": str(student)},
        "teacher": {"kind": "hf", "path": str(teacher)},
        "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 48},
        "train": {"max_steps": 4, "batch_size": 4, "threads": 1},
        "output_dir": str(tmp_path / name),
        **({"qat": qat} if qat else {}),
    }
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_cli("kd-train", "distill", "--config", config, "--no-progress")
    return tmp_path / name / "student"


def test_fp32_ptq_and_qat_students_are_compared_with_their_onnx_exports(
    tmp_path, tiny_llama_dir, tiny_teacher_dir
):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(24, seed=3))
    held_out = write_jsonl(tmp_path / "held.jsonl", tool_call_records(8, seed=11))
    fp32 = distill(tmp_path, "fp32", tiny_llama_dir, tiny_teacher_dir, data)
    qat = distill(
        tmp_path, "qat", tiny_llama_dir, tiny_teacher_dir, data, {**SCHEME, "start_step": 2}
    )
    ptq = tmp_path / "ptq"
    run_cli("kd-train", "quantize", fp32, ptq, "--scheme", "int4", "--group-size", "32")
    assert read_json(ptq / "quantization.json")["origin"] == "ptq"

    onnx = {}
    for name, student in (("fp32", fp32), ("ptq", ptq), ("qat", qat)):
        out = tmp_path / f"onnx-{name}"
        run_cli(
            *("kd-convert", "export", "--format", "onnx", student, out),
            *("--lengths", "16", "--no-progress"),
        )
        contract = read_json(out / "contract.json")
        assert contract.get("quantization", {}).get("origin") == (None if name == "fp32" else name)
        onnx[name] = out

    report, png = tmp_path / "quantization.json", tmp_path / "quantization.png"
    proc = run_cli(
        *("kd-eval", "quantization", "--teacher", tiny_teacher_dir, "--fp32", fp32, "--qat", qat),
        *("--data", held_out, "--length", "16", "--runs", "5", "--resamples", "200"),
        *(arg for name, out in onnx.items() for arg in ("--onnx", f"{name}={out}")),
        *("--out", report, "--png", png, "--no-progress"),
    )
    assert "scheme int4 (group 32) from qat" in proc.stdout
    section = read_json(report)["quantization"]
    arms = section["arms"]
    assert list(arms) == ["fp32", "ptq", "qat"]
    for name, arm in arms.items():
        for figure in (
            "forward_kl",
            "top1_agreement",
            *(("kl_vs_fp32",) if name != "fp32" else ()),
        ):
            est = arm[figure]
            assert all(math.isfinite(est[k]) for k in ("value", "low", "high")), (name, figure)
            assert est["low"] <= est["value"] <= est["high"], (name, figure)
        assert arm["onnx"]["latency_ms"] > 0
        assert arm["onnx"]["file_bytes"] >= arm["onnx"]["weight_bytes"] > 0
    for name in ("ptq", "qat"):
        assert arms[name]["onnx"]["weight_bytes"] < arms["fp32"]["onnx"]["weight_bytes"]
    assert [r["ptq"] for r in section["examples"]] != [r["fp32"] for r in section["examples"]]
    assert arms["ptq"]["kl_vs_fp32"]["value"] != 0.0
    assert set(section["recovered"]) == {"forward_kl", "top1_agreement"}
    assert png.read_bytes()[:4] == b"\x89PNG"
