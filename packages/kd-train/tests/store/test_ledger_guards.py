"""The ledger's guards: shared caps change only when asked, halts, leases of dead workers."""

import logging
import time

import pytest
from kd_train.store import (
    UNLIMITED_NANOS,
    BudgetCapChangeError,
    BudgetHaltedError,
    StoreError,
    open_store,
    sqlite_url,
)
from kd_train.store.schema import charges, reservations
from sqlalchemy import select, update


@pytest.fixture
def store(tmp_path):
    s = open_store(sqlite_url(tmp_path / "store.sqlite"))
    yield s
    s.close()


def test_a_worker_without_a_cap_joins_a_shared_budget_and_keeps_its_cap(store):
    store.ledger.open_budget("shared", 100, actor="first")
    store.ledger.open_budget("shared", None, actor="second")  # was: reset to 2**62
    assert store.ledger.status("shared").cap_nanos == 100


def test_a_budget_created_without_a_cap_has_none(store):
    store.ledger.open_budget("free", None)
    assert store.ledger.status("free").cap_nanos == UNLIMITED_NANOS


def test_another_cap_without_change_is_refused_and_changes_nothing(store):
    store.ledger.open_budget("shared", 100)
    for asked in (50, 200):
        with pytest.raises(BudgetCapChangeError, match="add --change-budget"):
            store.ledger.open_budget("shared", asked)
    assert store.ledger.status("shared").cap_nanos == 100
    assert [e.kind for e in store.ledger.events("shared")] == ["created"]


def test_the_same_cap_again_needs_no_flag(store):
    store.ledger.open_budget("shared", 100)
    store.ledger.open_budget("shared", 100)
    assert len(store.ledger.events("shared")) == 1


def test_a_cap_change_is_recorded_and_logged(store, caplog):
    caplog.set_level(logging.WARNING, logger="kd_train.store.ledger")
    store.ledger.open_budget("shared", 100, actor="w1")
    store.ledger.open_budget("shared", 300, change=True, actor="host:42")
    assert store.ledger.status("shared").cap_nanos == 300
    event = store.ledger.events("shared")[-1]
    assert (event.kind, event.old_cap_nanos, event.new_cap_nanos, event.actor) == (
        "cap_changed",
        100,
        300,
        "host:42",
    )
    assert "cap changed from 100 to 300 nano-USD by host:42" in caplog.text


def test_change_without_a_cap_is_an_error(store):
    store.ledger.open_budget("shared", 100)
    with pytest.raises(StoreError, match="needs the new cap"):
        store.ledger.open_budget("shared", None, change=True)


def overbill(store, budget="b", reserved=10, billed=25, owner="w1"):
    r = store.ledger.reserve(budget, reserved, owner=owner)
    store.ledger.settle(r, cost_nanos=billed, key=f"k{r.id}", model="m", body={}, estimated=False)
    return r


def test_an_answer_billed_past_its_reservation_halts_the_budget_for_every_worker(tmp_path):
    url = sqlite_url(tmp_path / "shared.sqlite")
    one, two = open_store(url), open_store(url)
    one.ledger.open_budget("b", 1000)
    overbill(one)
    status = two.ledger.status("b")
    assert status.spent_nanos == 25  # the truth is recorded
    assert "billed 25 nano-USD, more than the 10 reserved" in str(status.halted)
    with pytest.raises(BudgetHaltedError, match="budget 'b' is halted"):
        two.ledger.reserve("b", 1, owner="w2")  # another worker, another engine
    assert [e.kind for e in two.ledger.events("b")] == ["created", "halted"]
    one.close()
    two.close()


def test_requests_in_flight_at_a_halt_still_settle_truthfully(store):
    store.ledger.open_budget("b", 1000)
    held = [store.ledger.reserve("b", 10, owner=f"w{i}") for i in range(3)]
    for r in held:  # every one bills past its reservation; the first one halts
        store.ledger.settle(r, cost_nanos=30, key=f"k{r.id}", model="m", body={}, estimated=False)
    status = store.ledger.status("b")
    assert (status.spent_nanos, status.reserved_nanos) == (90, 0)
    assert [e.kind for e in store.ledger.events("b")].count("halted") == 1


def test_a_halted_budget_resumes_only_with_an_explicit_change(store):
    store.ledger.open_budget("b", 1000)
    overbill(store)
    store.ledger.open_budget("b", 1000)  # joining does not resume it
    with pytest.raises(BudgetHaltedError):
        store.ledger.reserve("b", 1, owner="w")
    store.ledger.open_budget("b", 1000, change=True, actor="operator")
    assert store.ledger.status("b").halted is None
    store.ledger.reserve("b", 1, owner="w")
    assert "resumed" in store.ledger.events("b")[-1].detail


def test_an_expired_lease_is_reclaimed_as_an_unconfirmed_charge(store):
    store.ledger.open_budget("b", 1000)
    r = store.ledger.reserve("b", 40, owner="gone", lease_s=60)
    with store.engine.begin() as conn:  # a worker of another host: liveness unknown
        conn.execute(update(reservations).values(host="elsewhere|x|1", pid=1))
    assert store.ledger.reclaim("b", now=time.time() + 30) == 0  # lease still running
    assert store.ledger.reclaim("b", now=time.time() + 61, actor="w2") == 40
    status = store.ledger.status("b")
    assert (status.reserved_nanos, status.spent_nanos, status.unconfirmed_nanos) == (0, 40, 40)
    with store.engine.connect() as conn:
        reason = conn.execute(select(charges.c.unconfirmed_reason)).scalar_one()
    assert "reclaimed: worker gone let its lease expire" in reason
    assert store.ledger.events("b")[-1].kind == "reclaimed"
    # the live worker, late, still settles: its answer is charged too (never undercounted)
    store.ledger.settle(r, cost_nanos=15, key="late", model="m", body={}, estimated=False)
    status = store.ledger.status("b")
    assert (status.reserved_nanos, status.spent_nanos) == (0, 55)
    store.ledger.release(r)  # closing it again is no error once reclaimed


def test_a_live_worker_of_this_host_is_never_reclaimed(store):
    store.ledger.open_budget("b", 1000)
    store.ledger.reserve("b", 40, owner="me", lease_s=0)
    assert store.ledger.reclaim("b", now=time.time() + 10_000) == 0
    assert store.ledger.status("b").reserved_nanos == 40
