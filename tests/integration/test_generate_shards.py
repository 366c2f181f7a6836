"""`kd-train generate --shard I/N` in two worker processes sharing one store (one SIGKILLed and
rerun), merged by `kd-train merge-shards` into the single run's dataset, byte for byte."""

import hashlib
import subprocess
import sys
import time

import pytest
from kd_train.store import open_store, sqlite_url
from kd_train.store.schema import charges
from kd_train.testing import FaultPlan, LoopbackTeacherServer, generate_argv, write_prompts
from sqlalchemy import select

pytestmark = pytest.mark.integration

N_PROMPTS = 14


def kd_train(*argv):
    return [sys.executable, "-m", "kd_train.cli", *map(str, argv)]


def argv(server, prompts, out, **options):
    return kd_train(*generate_argv(server.base_url, prompts, out, max_tokens=3, **options))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_two_workers_one_killed_merge_to_the_single_run(teacher_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, N_PROMPTS, "The quick brown fox {i}", prefix="q")
    single, out = tmp_path / "single" / "out.jsonl", tmp_path / "sharded" / "out.jsonl"
    faults = FaultPlan(rates={"slow": 1.0})
    with LoopbackTeacherServer(teacher_model_dir, faults=faults, slow_seconds=0.1) as server:
        done = subprocess.run(argv(server, prompts, single, concurrency=1), capture_output=True)
        assert done.returncode == 0, done.stderr
        command = argv(server, prompts, out, concurrency=2)
        worker0 = subprocess.Popen([*command, "--shard", "0/2"], stdout=subprocess.DEVNULL)
        worker1 = subprocess.Popen([*command, "--shard", "1/2"], stdout=subprocess.DEVNULL)
        part1 = out.with_name("out.worker-1-of-2.jsonl")
        deadline = time.monotonic() + 60
        while len(lines(part1)) < 2 and time.monotonic() < deadline:
            assert worker1.poll() is None, "worker 1 finished before it could be killed"
            time.sleep(0.01)
        worker1.kill()
        worker1.wait()
        assert worker0.wait() == 0
        assert len(lines(part1)) < N_PROMPTS // 2

        merge = kd_train("merge-shards", "--dataset", out, "--prompts", prompts)
        refused = subprocess.run(merge, capture_output=True, text=True)
        assert refused.returncode == 2
        assert "out.worker-1-of-2.jsonl is unfinished" in refused.stderr

        rerun = subprocess.run([*command, "--shard", "1/2"], capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
    merged = subprocess.run(merge, capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    assert digest(out) == digest(single)
    teacher = "out.jsonl.teacher.json"
    assert digest(out.with_name(teacher)) == digest(single.with_name(teacher))
    assert not list(out.parent.glob("out.worker-*"))
    store = open_store(sqlite_url(out.parent / "kd-store.sqlite"))
    with store.engine.connect() as conn:
        owners = {row.owner.rsplit(":", 1)[-1] for row in conn.execute(select(charges.c.owner))}
    store.close()
    assert owners == {"worker-0-of-2", "worker-1-of-2"}
