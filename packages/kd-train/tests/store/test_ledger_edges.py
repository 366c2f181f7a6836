"""The ledger at its edges: other budgets and owners untouched, boundaries, dead workers."""

import dataclasses
import json
import subprocess
import sys
import time

import pytest
from kd_train.store import StoreError, open_store, sqlite_url
from kd_train.store.ledger import BudgetEvent, BudgetStatus, Reservation
from kd_train.store.schema import charges, reservations, responses
from sqlalchemy import select, update


@pytest.fixture
def store(tmp_path):
    s = open_store(sqlite_url(tmp_path / "store.sqlite"))
    s.ledger.ensure_budget("b", cap_nanos=1000)
    s.ledger.ensure_budget("other", cap_nanos=1000)
    yield s
    s.close()


def elsewhere(store, expires_at=None):
    """Make every open reservation belong to a worker of another host (liveness unknown)."""
    values = {"host": "elsewhere|x|1", "pid": 1}
    if expires_at is not None:
        values["expires_at"] = expires_at
    with store.engine.begin() as conn:
        conn.execute(update(reservations).values(**values))


def test_release_owner_leaves_other_owners_and_other_budgets_open(store):
    mine = store.ledger.reserve("b", 10, owner="dead")
    theirs = store.ledger.reserve("b", 20, owner="alive")
    mine_elsewhere = store.ledger.reserve("other", 30, owner="dead")
    assert store.ledger.release_owner("b", "dead") == 10
    assert store.ledger.status("b").reserved_nanos == 20
    assert store.ledger.status("other").reserved_nanos == 30
    # the reservations it did not release are still open: they settle without an error
    store.ledger.settle(theirs, cost_nanos=5, key="t", model="m", body={}, estimated=False)
    store.ledger.settle(mine_elsewhere, cost_nanos=7, key="o", model="m", body={}, estimated=False)
    assert store.ledger.status("b").spent_nanos == 5
    assert store.ledger.status("other").spent_nanos == 7
    with pytest.raises(StoreError, match="is not open"):
        store.ledger.release(mine)


@pytest.mark.parametrize("record", [Reservation, BudgetStatus, BudgetEvent])
def test_what_the_ledger_hands_out_cannot_be_changed(record):
    values = {
        f.name: 0 if f.type in ("int", "int | None") else "x" for f in dataclasses.fields(record)
    }
    instance = record(**values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, dataclasses.fields(record)[0].name, 1)


def test_a_budget_with_a_cap_of_zero_exists_and_admits_nothing(store):
    store.ledger.ensure_budget("zero", cap_nanos=0)
    assert store.ledger.status("zero").cap_nanos == 0
    store.ledger.reserve("zero", 0, owner="w")  # a free request still fits


def test_an_answer_billed_exactly_its_reservation_does_not_halt(store):
    r = store.ledger.reserve("b", 40, owner="w")
    store.ledger.settle(r, cost_nanos=40, key="k", model="m", body={}, estimated=False)
    assert store.ledger.status("b").halted is None
    store.ledger.reserve("b", 1, owner="w")


def test_a_reservation_of_a_dead_worker_on_this_host_is_reclaimed_before_its_lease_ends(store):
    store.ledger.reserve("b", 40, owner="gone", lease_s=3600)
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    with store.engine.begin() as conn:  # the worker's pid: a process that has exited
        conn.execute(update(reservations).values(pid=int(child.stdout)))
    assert store.ledger.reclaim("b", now=time.time()) == 40
    with store.engine.connect() as conn:
        reason = conn.execute(select(charges.c.unconfirmed_reason)).scalar_one()
    assert "no longer runs" in reason


def test_a_lease_ending_exactly_now_is_not_yet_reclaimed(store):
    store.ledger.reserve("b", 40, owner="w")
    elsewhere(store, expires_at=5000.0)
    assert store.ledger.reclaim("b", now=5000.0) == 0
    assert store.ledger.reclaim("b", now=5000.5) == 40


def test_reclaim_without_a_time_uses_the_clock(store):
    store.ledger.reserve("b", 40, owner="w")
    elsewhere(store, expires_at=time.time() - 100)
    assert store.ledger.reclaim("b") == 40


def test_unconfirmed_charges_are_marked_estimated(store):
    r = store.ledger.reserve("b", 40, owner="w")
    store.ledger.settle_unconfirmed(r, key="k", reason="dropped")
    store.ledger.reserve("b", 30, owner="w2")
    elsewhere(store, expires_at=0.0)
    assert store.ledger.reclaim("b", now=1.0) == 30
    with store.engine.connect() as conn:
        rows = conn.execute(select(charges.c.cost_nanos, charges.c.estimated)).all()
    assert sorted(map(tuple, rows)) == [(30, True), (40, True)]


def test_a_reclaimed_reservation_settled_unconfirmed_later_is_not_charged_twice(store):
    r = store.ledger.reserve("b", 40, owner="w")
    elsewhere(store, expires_at=0.0)
    assert store.ledger.reclaim("b", now=1.0) == 40
    store.ledger.settle_unconfirmed(r, key="k", reason="dropped")
    status = store.ledger.status("b")
    assert (status.spent_nanos, status.reserved_nanos) == (40, 0)


def test_a_cached_answer_is_stored_as_canonical_json(store):
    r = store.ledger.reserve("b", 40, owner="w")
    body = {"z": 1, "a": {"y": 2, "b": 3}}
    store.ledger.settle(r, cost_nanos=4, key="k", model="m", body=body, estimated=False)
    with store.engine.connect() as conn:
        text = conn.execute(select(responses.c.response)).scalar_one()
    assert text == json.dumps(body, sort_keys=True)
    assert text.index('"a"') < text.index('"z"')
