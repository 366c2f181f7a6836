"""`kd-train generate` killed with SIGKILL at several points, then rerun, finishes exactly once."""

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from kd_train.data.schema import KDRecord
from kd_train.store import open_store, sqlite_url
from kd_train.store.schema import charges, responses
from kd_train.testing import FaultPlan, LoopbackTeacherServer, generate_argv, write_prompts
from sqlalchemy import select

pytestmark = pytest.mark.integration

N_PROMPTS = 12


def command(server, tmp_path):
    return [
        sys.executable,
        "-m",
        "kd_train.cli",
        *generate_argv(
            server.base_url,
            tmp_path / "prompts.jsonl",
            tmp_path / "run" / "out.jsonl",
            max_tokens=3,
            concurrency=2,
            price_per_1k_prompt=0.5,
            price_per_1k_completion=1.5,
            budget=10,
        ),
    ]


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("kill_after", [0, 4, 9])
def test_rerun_after_sigkill_answers_every_prompt_exactly_once(
    teacher_model_dir, tmp_path, kill_after
):
    write_prompts(tmp_path / "prompts.jsonl", N_PROMPTS, "The quick brown fox {i}", prefix="q")
    out = tmp_path / "run" / "out.jsonl"
    faults = FaultPlan(rates={"slow": 1.0})
    with LoopbackTeacherServer(teacher_model_dir, faults=faults, slow_seconds=0.15) as server:
        proc = subprocess.Popen(command(server, tmp_path), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = sum(server.counts.values()) > 0
            if started and len(lines(out)) >= kill_after:
                break
            assert proc.poll() is None, "generate finished before it could be killed"
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        written_before = len(lines(out))
        assert written_before < N_PROMPTS
        rerun = subprocess.run(command(server, tmp_path), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    records = [KDRecord.from_dict(json.loads(line)) for line in lines(out)]
    ids = [r.id for r in records]
    assert Counter(ids).most_common(1)[0][1] == 1, "duplicate ids in the output"
    assert set(ids) == {f"q{i}" for i in range(N_PROMPTS)}
    store = open_store(sqlite_url(tmp_path / "run" / "kd-store.sqlite"))
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(charges.c.response_key, charges.c.cost_nanos, charges.c.unconfirmed_reason)
        ).all()
        cached = conn.execute(select(responses.c.key, responses.c.cost_nanos)).all()
    status = store.ledger.status("default")
    store.close()
    charged = [(k, c) for k, c, reason in rows if reason is None]
    # The killed worker's requests in flight (at most its concurrency, 2) may have been
    # billed: the rerun reclaims their reservations as unconfirmed charges at the worst case.
    unconfirmed = [c for _, c, reason in rows if reason is not None]
    assert len(unconfirmed) <= 2
    assert status.unconfirmed_nanos == sum(unconfirmed)
    # Every answer the output holds was paid for once, at its cost.
    assert len({k for k, _ in charged}) == len(charged), "a response was paid for twice"
    assert sum(c for _, c in charged) == sum(c for _, c in cached)
    assert status.spent_nanos == sum(c for _, c in charged) + sum(unconfirmed)
    assert {k for k, _ in charged} == {k for k, _ in cached}
    assert len(cached) >= N_PROMPTS
