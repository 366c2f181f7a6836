"""``kd-train cache-logits`` in two worker processes (one SIGKILLed and resumed), merged by
``kd-train merge-shards`` into the single run's cache, byte for byte; ``kd-train distill``
then trains on it with ``teacher.kind: cached``."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl

from tests.e2e.stages import BIN, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_RECORDS = 120


def digests(directory):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def cache_argv(teacher, data, out):
    return [
        *("cache-logits", "--teacher", teacher, "--data", data, "--out", out),
        *("--k", "8", "--shard-size", "2", "--batch-size", "1", "--max-length", "96"),
        "--no-progress",
    ]


def kill_after_first_shard(proc, worker_dir):
    """SIGKILL ``proc`` once it has finished a shard, before it finishes all."""
    deadline = time.monotonic() + 120
    while not (worker_dir / "manifest.partial.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker exited ({proc.returncode}) or stalled before its first shard")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (worker_dir / "manifest.json").exists():
        pytest.fail("the worker finished before it could be killed; give it more records")


def test_two_workers_one_killed_merge_to_the_single_run_and_distill(
    tmp_path, tiny_llama_dir, tiny_teacher_dir
):
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(N_RECORDS, seed=5))
    run_cli("kd-train", *cache_argv(tiny_teacher_dir, data, tmp_path / "single"))

    out = tmp_path / "sharded"
    argv = [str(BIN / "kd-train"), *map(str, cache_argv(tiny_teacher_dir, data, out))]
    # Worker 0 is launched as torchrun would (RANK/WORLD_SIZE), worker 1 with --shard.
    env0 = {**os.environ, "RANK": "0", "WORLD_SIZE": "2"}
    worker0 = subprocess.Popen(argv, env=env0, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker1 = subprocess.Popen([*argv, "--shard", "1/2"], stdout=subprocess.DEVNULL)
    kill_after_first_shard(worker1, out / "worker-1-of-2")
    assert worker0.wait() == 0, worker0.stderr.read() if worker0.stderr else ""

    refused = subprocess.run(
        [str(BIN / "kd-train"), "merge-shards", "--cache", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "worker-1-of-2 is unfinished" in refused.stderr

    run_cli("kd-train", *cache_argv(tiny_teacher_dir, data, out), "--shard", "1/2")
    merged = json.loads(run_cli("kd-train", "merge-shards", "--cache", out).stdout)
    assert merged["records"] == N_RECORDS
    assert digests(out) == digests(tmp_path / "single")

    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "cached", "path": str(out)},
        "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 96},
        "loss": {"weights": {"kd": 1.0}},
        "train": {"max_steps": 2, "batch_size": 4, "threads": 1},
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    run_cli("kd-train", "distill", "--config", tmp_path / "run.yaml", "--no-progress")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "kd" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["kd"] > 0 for r in steps)
