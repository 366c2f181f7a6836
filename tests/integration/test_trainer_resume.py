"""Exact resume after a real SIGKILL: ``kd-train distill`` killed mid-epoch, then ``resume``."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer.metrics import read_metrics
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

MAX_STEPS = 36
KILL_AFTER = 16  # steps; checkpoints every 5, so the resume starts from step 15


def write_config(tmp_path, name, student, teacher, data):
    cfg = {
        "student": {"path": str(student)},
        "teacher": {"kind": "hf", "path": str(teacher)},
        "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 48},
        "optim": {"lr": 3e-3, "warmup_steps": 3},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": 4,
            "grad_accum": 2,
            "eval_every": 6,
            "checkpoint_every": 5,
            "threads": 1,
            "seed": 5,
        },
        "output_dir": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def kd_train(*args):
    return [shutil.which("kd-train"), *args]


def step_rows(run_dir):
    return [
        {k: v for k, v in row.items() if k not in ("tokens_per_s", "elapsed_s", "peak_memory_mb")}
        for row in read_metrics(run_dir / "metrics.jsonl")
    ]


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(
    tmp_path, tiny_llama_dir, tiny_teacher_dir
):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(40, seed=3))
    whole = write_config(tmp_path, "whole", tiny_llama_dir, tiny_teacher_dir, data)
    killed = write_config(tmp_path, "killed", tiny_llama_dir, tiny_teacher_dir, data)
    subprocess.run(kd_train("distill", "--config", str(whole), "--no-progress"), check=True)

    proc = subprocess.Popen(
        kd_train("distill", "--config", str(killed), "--no-progress"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(read_metrics(tmp_path / "killed" / "metrics.jsonl")) < KILL_AFTER:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert len(read_metrics(tmp_path / "killed" / "metrics.jsonl")) < MAX_STEPS
    assert not (tmp_path / "killed" / "student").exists()

    out = subprocess.run(
        kd_train("resume", str(tmp_path / "killed"), "--no-progress"),
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(out.stdout)["step"] == MAX_STEPS

    assert step_rows(tmp_path / "killed") == step_rows(tmp_path / "whole")
    expected = load_file(str(tmp_path / "whole" / "student" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "student" / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
