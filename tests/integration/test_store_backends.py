"""Ledger behaviour that must hold on every store backend: SQLite and PostgreSQL."""

import threading

import pytest
from kd_train.store import BudgetExhaustedError, open_store, sqlite_url

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "shared.sqlite")
    return request.getfixturevalue("pg_url")


def test_sixteen_threads_on_two_engines_never_exceed_the_cap(store_url):
    stores = [open_store(store_url), open_store(store_url)]
    stores[0].ledger.ensure_budget("shared", cap_nanos=1000)
    admitted, refused = [], []
    lock = threading.Lock()

    def worker(n: int) -> None:
        ledger = stores[n % 2].ledger
        for _ in range(5):
            try:
                r = ledger.reserve("shared", 70, owner=f"w{n}")
            except BudgetExhaustedError:
                with lock:
                    refused.append(n)
                continue
            ledger.settle(r, cost_nanos=70, key=f"{n}-{r.id}", model="m", body={}, estimated=False)
            with lock:
                admitted.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = stores[0].ledger.status("shared")
    assert len(admitted) == 1000 // 70
    assert status.spent_nanos == stores[1].ledger.charged_total("shared") == 70 * len(admitted)
    assert status.reserved_nanos == 0
    assert len(refused) == 16 * 5 - len(admitted)
    for s in stores:
        s.close()
