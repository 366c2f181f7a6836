"""``kd-train distill`` with ``train.on_policy``: the student's own samples, scored by the teacher.

Two runs differ only in the student's weights (the second student is the first plus small
noise); with the same seed their samplers draw the same random numbers, so the first
step's samples differ only because the students do. A rerun of the first config samples
exactly the same tokens. Every step of both runs takes its completions from the student
(``lmbda: 1``) and the teacher scores them (the KD term is finite and positive).
"""

import json

import pytest
import torch
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer.metrics import read_metrics
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.e2e.stages import run_cli

pytestmark = pytest.mark.e2e  # ~15 s: runs in the tests session too


def distill(tmp_path, name, student, teacher, data):
    cfg = {
        "student": {"path": str(student)},
        "teacher": {"kind": "hf", "path": str(teacher)},
        "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 48},
        "loss": {"divergence": "reverse_kl", "weights": {"kd": 1.0}},
        "train": {
            "max_steps": 3,
            "batch_size": 4,
            "threads": 1,
            "on_policy": {"lmbda": 1.0, "temperature": 1.0, "max_new_tokens": 8, "log_samples": 4},
        },
        "output_dir": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_cli("kd-train", "distill", "--config", path, "--no-progress")
    run_dir = tmp_path / name
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").open()]
    return read_metrics(run_dir / "metrics.jsonl"), samples


def first_step(samples):
    return [(s["record_id"], s["completion_ids"]) for s in samples if s["step"] == 1]


def test_the_sampled_tokens_come_from_the_student(tmp_path, tiny_llama_dir, tiny_teacher_dir):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(16, seed=5))
    other = tmp_path / "other-student"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(other)

    rows, samples = distill(tmp_path, "a", tiny_llama_dir, tiny_teacher_dir, data)
    _, again = distill(tmp_path, "a-again", tiny_llama_dir, tiny_teacher_dir, data)
    _, changed = distill(tmp_path, "b", other, tiny_teacher_dir, data)

    assert [r["source"] for r in rows] == ["student"] * 3
    assert all(r["kd"] > 0 and r["gen_len_mean"] >= 1 for r in rows)
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4 + [3] * 4
    assert first_step(again) == first_step(samples)  # same student, same draws
    # Same prompts (same data order), same draws, another student: other tokens.
    assert [rid for rid, _ in first_step(changed)] == [rid for rid, _ in first_step(samples)]
    assert first_step(changed) != first_step(samples)
