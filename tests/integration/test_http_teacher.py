"""`kd-train generate` against the loopback server with injected faults, as a real process."""

import json
import shutil
import subprocess

import pytest
from kd_train.store import open_store, sqlite_url
from kd_train.testing import FaultPlan, LoopbackTeacherServer, generate_argv, write_prompts

pytestmark = pytest.mark.integration

KEY = "sk-integration-5up3r-s3cr3t"
FAULTS = {"429": 0.1, "500": 0.1, "drop": 0.05, "malformed": 0.05, "slow": 0.2}


def run_generate(server, tmp_path, n_prompts, **options):
    write_prompts(tmp_path / "prompts.jsonl", n_prompts)
    argv = generate_argv(
        server.base_url,
        tmp_path / "prompts.jsonl",
        tmp_path / "run" / "out.jsonl",
        api_key_env="KD_TEACHER_KEY",
        retry_base_delay=0.001,
        max_attempts=8,
        **options,
    )
    env = {"KD_TEACHER_KEY": KEY, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    cmd = [shutil.which("kd-train"), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def assert_key_nowhere(proc, run_dir):
    assert KEY not in proc.stdout + proc.stderr
    for path in run_dir.iterdir():
        assert KEY.encode() not in path.read_bytes(), path


def test_faulty_endpoint_completes_every_prompt_and_keeps_the_key_secret(
    teacher_model_dir, tmp_path
):
    faults = FaultPlan(rates=FAULTS, seed=7)
    with LoopbackTeacherServer(
        teacher_model_dir, api_key=KEY, faults=faults, retry_after=0.01, slow_seconds=0.05
    ) as server:
        proc = run_generate(server, tmp_path, 20, concurrency=4)
    assert proc.returncode == 0, proc.stderr
    assert "retry" in proc.stderr  # faults were met and logged
    out = (tmp_path / "run" / "out.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in out) == sorted(f"r{i}" for i in range(20))
    assert_key_nowhere(proc, tmp_path / "run")


def test_budget_is_never_exceeded_under_concurrency_16(teacher_model_dir, tmp_path):
    faults = FaultPlan(rates=FAULTS, seed=3)
    with LoopbackTeacherServer(
        teacher_model_dir, api_key=KEY, faults=faults, retry_after=0.01, slow_seconds=0.05
    ) as server:
        proc = run_generate(server, tmp_path, 60, concurrency=16, budget=0.5)
        assert server.wait_idle()
        billed = server.billed_nanos(1.0, 1.0)
    assert proc.returncode == 3, proc.stderr
    assert "exhausted" in proc.stderr
    store = open_store(sqlite_url(tmp_path / "run" / "kd-store.sqlite"))
    status = store.ledger.status("default")
    charged = store.ledger.charged_total("default")
    store.close()
    assert status.spent_nanos == charged <= 500_000_000
    assert status.reserved_nanos == 0
    assert billed <= status.spent_nanos  # what the provider billed is within the ledger's spend
    written = (tmp_path / "run" / "out.jsonl").read_text().splitlines()
    assert 0 < len(written) < 60
    assert_key_nowhere(proc, tmp_path / "run")
