"""On-policy distillation under ``torchrun --nproc_per_node 2``: DDP and FSDP2 (gloo on CPU).

Each strategy trains a student that samples its own completions on most steps, is rolled
back to its step-2 checkpoint, and is resumed with the same two processes: the resumed run
must reproduce the uninterrupted one bit for bit (losses, samples, weights). Under FSDP the
student samples from a whole copy of its sharded weights.
"""

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

MAX_STEPS = 4
#: Wall-clock figures differ between any two runs.
TIMING = ("tokens_per_s", "elapsed_s", "peak_memory_mb", "generate_s", "teacher_s", "train_s")


def torchrun(*args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run([*cmd, "-m", "kd_train.cli", *args, "--no-progress"], check=True, timeout=600)


def rows(run_dir):
    return [
        {k: v for k, v in row.items() if k not in TIMING}
        for row in read_metrics(run_dir / "metrics.jsonl")
    ]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_on_policy_run_resumes_bit_for_bit(
    strategy, tmp_path, tiny_llama_dir, tiny_teacher_dir
):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(40, seed=4))
    run = tmp_path / "run"
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "hf", "path": str(tiny_teacher_dir)},
        "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 48},
        "loss": {"divergence": "jsd", "beta": 0.5, "weights": {"kd": 1.0}},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": 4,
            "threads": 1,
            "checkpoint_every": 2,
            "keep_checkpoints": 3,
            "on_policy": {"lmbda": 0.6, "temperature": 1.5, "max_new_tokens": 6},
        },
        "distributed": {"strategy": strategy},
        "output_dir": str(run),
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    torchrun("distill", "--config", str(config))

    reference = rows(run)
    assert [r["step"] for r in reference] == list(range(1, MAX_STEPS + 1))
    sources = [r["source"] for r in reference]
    assert "student" in sources[:2]
    assert "student" in sources[2:]
    assert all(r["gen_len_mean"] > 0 for r in reference if r["source"] == "student")
    samples = (run / "samples.jsonl").read_text()
    assert samples

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / f"step-{MAX_STEPS:08d}")
    shutil.rmtree(resumed / "student")
    (resumed / "run_manifest.json").unlink()
    stored = json.loads((resumed / "config.json").read_text())
    stored["output_dir"] = str(resumed)
    (resumed / "config.json").write_text(json.dumps(stored))
    torchrun("resume", str(resumed))

    assert rows(resumed) == reference
    assert (resumed / "samples.jsonl").read_text() == samples
    expected = load_file(str(run / "student" / "model.safetensors"))
    got = load_file(str(resumed / "student" / "model.safetensors"))
    assert all(torch.equal(expected[k], got[k]) for k in expected)
