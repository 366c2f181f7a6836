"""``kd-train distill`` of a LoRA student, then ``kd-convert export`` of the merged student.

Only the adapters train; the saved student has the adapters merged into its weights, so it
is a plain ``transformers`` model with the base model's tensor names, which ``kd-convert``
exports with parity as any other float student.
"""

import pytest
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from safetensors.torch import load_file

from tests.e2e.stages import read_json, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
pytest.importorskip("peft", reason="LoRA students need the lora extra (peft)")


def test_a_lora_student_trains_through_the_cli_and_exports_merged(
    tmp_path, tiny_llama_dir, tiny_teacher_dir
):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(24, seed=4))
    lora = {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    cfg = {
        "student": {"path": str(tiny_llama_dir), "lora": lora},
        "teacher": {"kind": "hf", "path": str(tiny_teacher_dir)},
        "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 48},
        "optim": {"lr": 1e-2},
        "train": {"max_steps": 3, "batch_size": 4, "threads": 1},
        "output_dir": str(tmp_path / "run"),
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_cli("kd-train", "distill", "--config", config, "--no-progress")
    student = tmp_path / "run" / "student"
    merged = load_file(str(student / "model.safetensors"))
    base = load_file(str(tiny_llama_dir / "model.safetensors"))
    assert set(merged) == set(base)
    changed = {name for name in base if not (merged[name] == base[name]).all()}
    assert changed == {
        f"model.layers.{i}.{part}.weight"
        for i in range(2)
        for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
    }

    export = tmp_path / "onnx"
    run_cli("kd-convert", "export", "--format", "onnx", student, export, "--lengths", "16")
    assert read_json(export / "parity.json")["status"] == "passed"
