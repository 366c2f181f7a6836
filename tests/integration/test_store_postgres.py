"""The store against a real PostgreSQL server: same behaviour as SQLite, one shared budget.

The concurrency test runs on both backends: ``test_store_backends.py``.
"""

import subprocess
import sys

import pytest
from kd_train.store import BudgetExhaustedError, open_store
from kd_train.testing import LoopbackTeacherServer, generate_argv, write_prompts

pytestmark = pytest.mark.integration


def test_postgres_url_opens_a_store_with_the_psycopg_driver(pg_url):
    store = open_store(pg_url)
    assert (store.engine.dialect.name, store.engine.dialect.driver) == ("postgresql", "psycopg")
    store.close()


def test_ledger_settles_and_refuses_on_postgres(pg_url):
    store = open_store(pg_url)
    store.ledger.ensure_budget("b", cap_nanos=100)
    r = store.ledger.reserve("b", 60, owner="w")
    with pytest.raises(BudgetExhaustedError):
        store.ledger.reserve("b", 41, owner="w")
    store.ledger.settle(r, cost_nanos=30, key="k", model="m", body={"x": 1}, estimated=False)
    assert store.ledger.status("b").spent_nanos == 30
    assert store.cache.get("k").body == {"x": 1}
    store.close()


def test_two_generate_workers_share_one_budget_without_overspending(
    pg_url, teacher_model_dir, tmp_path
):
    procs = []
    with LoopbackTeacherServer(teacher_model_dir, slow_seconds=0.02) as server:
        for worker in ("a", "b"):
            prompts = tmp_path / f"{worker}.jsonl"
            write_prompts(prompts, 30, f"Outlook good {worker} {{i}}", prefix=worker)
            out = tmp_path / f"{worker}.out.jsonl"
            options = {"top_logprobs": None, "retry_base_delay": None}
            argv = generate_argv(server.base_url, prompts, out, concurrency=8, budget=0.4,
                                 store=pg_url, **options)  # fmt: skip
            args = [sys.executable, "-m", "kd_train.cli", *argv]
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        results = [(p.wait(), p.stderr.read().decode()) for p in procs]
    assert any(code == 3 for code, _ in results), results
    store = open_store(pg_url)
    status = store.ledger.status("default")
    charged = store.ledger.charged_total("default")
    store.close()
    written = sum(len((tmp_path / f"{w}.out.jsonl").read_text().splitlines()) for w in ("a", "b"))
    assert status.spent_nanos == charged <= 400_000_000
    assert status.reserved_nanos == 0
    assert 0 < written < 60
