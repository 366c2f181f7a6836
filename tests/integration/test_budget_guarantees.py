"""The budget's promises on both store backends (SQLite and PostgreSQL).

* An endpoint that bills past ``max_tokens`` under concurrency: the first overbilled answer
  halts the budget, so the spend passes the cap by at most the excess of the requests in
  flight, ``concurrency x (billed - reserved)``, and no worker sends anything after it.
* A reservation held by a worker killed with SIGKILL is reclaimed (as an unconfirmed
  charge at its worst case) by the next worker that opens the budget; a live worker's is not.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from kd_train.store import (
    BudgetExhaustedError,
    BudgetHaltedError,
    BudgetOverrunError,
    open_store,
    sqlite_url,
)
from kd_train.store.schema import charges
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig, HTTPTeacherError
from kd_train.teachers.retry import RetryPolicy
from kd_train.testing import FaultPlan, LoopbackTeacherServer, generate_argv, write_prompts
from sqlalchemy import select

pytestmark = pytest.mark.integration

CONCURRENCY = 8
EXTRA = 40  # completion tokens billed past max_tokens by the overbilling endpoint


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "shared.sqlite")
    return request.getfixturevalue("pg_url")


def teacher(server, store, budget, **overrides):
    config = HTTPTeacherConfig(
        server.base_url,
        "tiny",
        max_tokens=2,
        top_logprobs=0,
        concurrency=CONCURRENCY,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        price_per_1k_prompt=1.0,
        price_per_1k_completion=1.0,
        budget=budget,
        **overrides,
    )
    return HTTPTeacher(config, store=store, owner="worker")


def test_overbilling_under_concurrency_overshoots_by_at_most_the_in_flight_excess(
    teacher_model_dir, store_url
):
    prompts = [f"prompt number {i:02d}" for i in range(3 * CONCURRENCY)]  # one byte length
    worst = -(-((len(prompts[0].encode()) + 16) * 10**9 + 2 * 10**9) // 1000)
    cap = CONCURRENCY * worst  # the whole first wave fits; each of its answers overbills
    store = open_store(store_url)
    outcomes = []
    lock = threading.Lock()
    plan = FaultPlan(rates={"slow": 1.0})  # every answer is slow: the wave is in flight at once
    with LoopbackTeacherServer(
        teacher_model_dir, faults=plan, slow_seconds=0.5, extra_billed_tokens=EXTRA
    ) as server:
        worker = teacher(server, store, cap / 1e9)

        def ask(prompt):
            try:
                worker.generate(prompt)
                outcome = "answered"
            except (BudgetOverrunError, BudgetExhaustedError, HTTPTeacherError) as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        worker.close()
        assert server.wait_idle()
        sent = sum(server.counts.values())
        billed = server.billed_nanos(1.0, 1.0)
        # a second worker sharing the budget sends nothing once it is halted
        other = teacher(server, open_store(store_url), None)
        with pytest.raises(BudgetHaltedError, match="is halted"):
            other.generate("prompt number 99")
        other.close()
        other.store.close()
        assert sum(server.counts.values()) == sent
    status = store.ledger.status("default")
    with store.engine.connect() as conn:
        costs = [c for (c,) in conn.execute(select(charges.c.cost_nanos))]
    store.close()
    excess = max(costs) - worst
    assert excess > 0, "the endpoint should have billed past the reservations"
    assert sent <= CONCURRENCY  # nothing was sent after the first overbilled answer
    assert status.halted is not None
    assert status.spent_nanos == billed == sum(costs)  # the ledger records what was billed
    assert status.reserved_nanos == 0
    assert status.spent_nanos > cap  # the scenario does overshoot ...
    assert status.spent_nanos - cap <= CONCURRENCY * excess  # ... by no more than the bound
    assert outcomes.count("answered") == 0 or "BudgetOverrunError" in outcomes


HOLD = """
import sys, time
from kd_train.store import open_store
store = open_store(sys.argv[1])
store.ledger.reserve("shared", 40, owner="doomed")
print("held", flush=True)
time.sleep(600)
"""


def hold_a_reservation(store_url):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, store_url], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_reservation_of_a_worker_killed_with_sigkill_is_reclaimed(store_url):
    store = open_store(store_url)
    store.ledger.open_budget("shared", 1000)
    alive = hold_a_reservation(store_url)
    assert store.ledger.reclaim("shared") == 0  # its worker still runs
    alive.send_signal(signal.SIGKILL)
    alive.wait()
    assert store.ledger.status("shared").reserved_nanos == 40  # left behind by the kill
    assert store.ledger.reclaim("shared", actor="next worker") == 40
    status = store.ledger.status("shared")
    events = store.ledger.events("shared")
    store.close()
    assert (status.reserved_nanos, status.spent_nanos, status.unconfirmed_nanos) == (0, 40, 40)
    assert events[-1].kind == "reclaimed"
    assert f"worker doomed (pid {alive.pid} on this host) no longer runs" in events[-1].detail


def test_generate_killed_mid_request_leaves_nothing_held_after_a_rerun(teacher_model_dir, tmp_path):
    write_prompts(tmp_path / "prompts.jsonl", 6)
    out = tmp_path / "run" / "out.jsonl"
    argv = generate_argv("", tmp_path / "prompts.jsonl", out, budget=5, concurrency=3)
    with LoopbackTeacherServer(teacher_model_dir, faults=FaultPlan(rates={"stall": 1.0})) as hung:
        argv[argv.index("--base-url") + 1] = hung.base_url
        proc = subprocess.Popen([sys.executable, "-m", "kd_train.cli", *argv])
        deadline = time.monotonic() + 60
        while sum(hung.counts.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = open_store(sqlite_url(out.parent / "kd-store.sqlite"))
    held = store.ledger.status("default").reserved_nanos
    assert held > 0
    with LoopbackTeacherServer(teacher_model_dir) as server:
        argv[argv.index("--base-url") + 1] = server.base_url
        rerun = subprocess.run(
            [sys.executable, "-m", "kd_train.cli", *argv], capture_output=True, text=True
        )
    assert rerun.returncode == 0, rerun.stderr
    status = store.ledger.status("default")
    store.close()
    assert status.reserved_nanos == 0
    assert status.unconfirmed_nanos == held  # charged at the worst case: it may have been billed
    assert "reclaimed: worker" in rerun.stderr
