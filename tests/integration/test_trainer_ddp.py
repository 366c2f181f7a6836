"""``kd-train distill`` under ``torchrun --nproc_per_node 2`` (DDP, gloo on CPU)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer.metrics import read_metrics
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

#: Same global batch, different process count: float32 sums in another order, nothing more.
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


def write_config(tmp_path, name, student, teacher, data, batch_size):
    cfg = {
        "student": {"path": str(student)},
        "teacher": {"kind": "hf", "path": str(teacher)},
        "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 48},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"max_steps": 8, "batch_size": batch_size, "threads": 1, "eval_every": 4},
        "output_dir": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(
    tmp_path, tiny_llama_dir, tiny_teacher_dir
):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(40, seed=4))
    single = write_config(tmp_path, "single", tiny_llama_dir, tiny_teacher_dir, data, 8)
    ddp = write_config(tmp_path, "ddp", tiny_llama_dir, tiny_teacher_dir, data, 4)
    subprocess.run(
        [shutil.which("kd-train"), "distill", "--config", str(single), "--no-progress"], check=True
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "kd_train.cli",
            "distill",
            "--config",
            str(ddp),
            "--no-progress",
        ],
        check=True,
        timeout=300,
    )

    manifest = json.loads((tmp_path / "ddp" / "run_manifest.json").read_text())
    assert len(manifest["replica_sha256"]) == 2
    assert manifest["replica_sha256"][0] == manifest["replica_sha256"][1]

    one, two = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("single", "ddp"))
    assert [r["step"] for r in two] == list(range(1, 9))
    for a, b in zip(one, two, strict=True):
        assert a["tokens"] == b["tokens"]
        for key in ("loss", "kd", "ce", "eval_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL)
    w1 = load_file(str(tmp_path / "single" / "student" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "ddp" / "student" / "model.safetensors"))
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=WEIGHT_ATOL)
