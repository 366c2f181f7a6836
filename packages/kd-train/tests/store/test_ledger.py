import pytest
from kd_train.store import BudgetExhaustedError, StoreError, open_store, sqlite_url
from kd_train.store.schema import charges
from sqlalchemy import select


@pytest.fixture
def store(tmp_path):
    s = open_store(sqlite_url(tmp_path / "store.sqlite"))
    s.ledger.ensure_budget("b", cap_nanos=100)
    yield s
    s.close()


def test_reservation_that_fits_is_held(store):
    store.ledger.reserve("b", 40, owner="w")
    assert store.ledger.status("b").reserved_nanos == 40


def test_reservation_beyond_cap_is_refused_and_changes_nothing(store):
    store.ledger.reserve("b", 70, owner="w")
    with pytest.raises(BudgetExhaustedError, match="exhausted") as err:
        store.ledger.reserve("b", 31, owner="w")
    assert err.value.needed == 31
    assert store.ledger.status("b").reserved_nanos == 70


def test_reservation_exactly_at_cap_is_admitted(store):
    store.ledger.reserve("b", 100, owner="w")
    assert store.ledger.status("b").reserved_nanos == 100


def test_settle_moves_reservation_to_actual_spend_and_caches(store):
    r = store.ledger.reserve("b", 60, owner="w")
    store.ledger.settle(r, cost_nanos=25, key="k1", model="m", body={"a": 1}, estimated=True)
    status = store.ledger.status("b")
    assert (status.spent_nanos, status.reserved_nanos) == (25, 0)
    hit = store.cache.get("k1")
    assert hit is not None
    assert (hit.body, hit.cost_nanos, hit.estimated) == ({"a": 1}, 25, True)


def test_spent_equals_sum_of_charge_rows(store):
    for i, cost in enumerate([3, 7, 11]):
        r = store.ledger.reserve("b", 20, owner="w")
        store.ledger.settle(r, cost_nanos=cost, key=f"k{i}", model="m", body={}, estimated=False)
    assert store.ledger.status("b").spent_nanos == store.ledger.charged_total("b") == 21


def test_release_frees_the_reservation_without_charge(store):
    r = store.ledger.reserve("b", 60, owner="w")
    store.ledger.release(r)
    status = store.ledger.status("b")
    assert (status.spent_nanos, status.reserved_nanos) == (0, 0)


def test_unconfirmed_settle_charges_the_reserved_worst_case_with_its_reason(store):
    r = store.ledger.reserve("b", 60, owner="w")
    store.ledger.settle_unconfirmed(r, key="k1", reason="timed out after 1.0 s")
    status = store.ledger.status("b")
    assert (status.spent_nanos, status.reserved_nanos, status.unconfirmed_nanos) == (60, 0, 60)
    with store.engine.connect() as conn:
        row = conn.execute(select(charges)).one()
    assert (row.response_key, row.cost_nanos, row.unconfirmed_reason) == (
        "k1",
        60,
        "timed out after 1.0 s",
    )


def test_unconfirmed_charge_caches_nothing(store):
    r = store.ledger.reserve("b", 60, owner="w")
    store.ledger.settle_unconfirmed(r, key="k1", reason="dropped")
    assert store.cache.get("k1") is None


def test_spent_counts_confirmed_and_unconfirmed_charges(store):
    r1 = store.ledger.reserve("b", 30, owner="w")
    store.ledger.settle(r1, cost_nanos=12, key="k1", model="m", body={}, estimated=False)
    r2 = store.ledger.reserve("b", 30, owner="w")
    store.ledger.settle_unconfirmed(r2, key="k2", reason="HTTP 502")
    status = store.ledger.status("b")
    assert status.spent_nanos == store.ledger.charged_total("b") == 42
    assert status.unconfirmed_nanos == 30


def test_unconfirmed_charges_count_against_the_cap(store):
    r = store.ledger.reserve("b", 80, owner="w")
    store.ledger.settle_unconfirmed(r, key="k", reason="timed out")
    with pytest.raises(BudgetExhaustedError, match="exhausted"):
        store.ledger.reserve("b", 21, owner="w")


def test_closing_a_reservation_twice_is_an_error(store):
    r = store.ledger.reserve("b", 10, owner="w")
    store.ledger.release(r)
    with pytest.raises(StoreError, match="not open"):
        store.ledger.release(r)


def test_release_owner_frees_only_that_owners_reservations(store):
    store.ledger.reserve("b", 10, owner="dead")
    store.ledger.reserve("b", 15, owner="dead")
    store.ledger.reserve("b", 20, owner="alive")
    assert store.ledger.release_owner("b", "dead") == 25
    assert store.ledger.status("b").reserved_nanos == 20


def test_same_key_paid_twice_is_charged_twice_and_cached_once(store):
    for _ in range(2):
        r = store.ledger.reserve("b", 10, owner="w")
        store.ledger.settle(r, cost_nanos=4, key="same", model="m", body={}, estimated=False)
    assert store.ledger.status("b").spent_nanos == 8
    assert len(store.cache) == 1


def test_ensure_budget_updates_the_cap_of_an_existing_budget(store):
    store.ledger.ensure_budget("b", cap_nanos=500)
    assert store.ledger.status("b").cap_nanos == 500


def test_negative_cap_is_refused(store):
    with pytest.raises(StoreError, match=">= 0"):
        store.ledger.ensure_budget("b", cap_nanos=-1)


def test_unknown_budget_is_an_error(store):
    with pytest.raises(StoreError, match="no budget named 'nope'"):
        store.ledger.reserve("nope", 1, owner="w")
    with pytest.raises(StoreError, match="no budget named 'nope'"):
        store.ledger.status("nope")
