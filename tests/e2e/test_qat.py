"""``kd-train distill`` with a ``qat`` section, then ``kd-convert export`` and ``kd-eval``.

The run switches QAT on at step 2 of 4 and is killed (rolled back) to its step-2 checkpoint,
written before the switch; ``kd-train resume`` finishes it with the same losses. The saved
student (float weights + ``quantization.json``) exports to ONNX with int8 weights and its
scales, whose parity against the fake-quant model passes, and ``kd-eval fidelity`` scores it
as the fake-quant model it was trained as.
"""

import json
import shutil

import pytest
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer.metrics import read_metrics

from tests.e2e.stages import read_json, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
pytest.importorskip("torchao", reason="QAT needs the qat extra (torchao)")


def test_a_qat_run_resumes_across_the_switch_exports_and_evaluates(
    tmp_path, tiny_llama_dir, tiny_teacher_dir
):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(24, seed=3))
    held_out = write_jsonl(tmp_path / "held.jsonl", tool_call_records(6, seed=11))
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "hf", "path": str(tiny_teacher_dir)},
        "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 48},
        "train": {"max_steps": 4, "batch_size": 4, "threads": 1, "checkpoint_every": 2},
        "qat": {"scheme": "int8", "start_step": 2},
        "output_dir": str(tmp_path / "run"),
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_cli("kd-train", "distill", "--config", config, "--no-progress")
    run = tmp_path / "run"
    losses = [row["loss"] for row in read_metrics(run / "metrics.jsonl")]
    assert json.loads((run / "student" / "quantization.json").read_text())["scheme"] == "int8"

    shutil.rmtree(run / "checkpoints" / "step-00000004")
    shutil.rmtree(run / "student")
    run_cli("kd-train", "resume", run, "--no-progress")
    assert [row["loss"] for row in read_metrics(run / "metrics.jsonl")] == losses

    export = tmp_path / "onnx"
    run_cli("kd-convert", "export", "--format", "onnx", run / "student", export, "--lengths", "16")
    assert read_json(export / "parity.json")["status"] == "passed"
    assert read_json(export / "contract.json")["quantization"]["scheme"] == "int8"

    report = tmp_path / "fidelity.json"
    run_cli(
        *("kd-eval", "fidelity", "--teacher", tiny_teacher_dir, "--student", run / "student"),
        *("--data", held_out, "--out", report, "--no-progress", "--resamples", "100"),
    )
    assert read_json(report)["fidelity"]["aggregate"]["forward_kl"]["value"] > 0
