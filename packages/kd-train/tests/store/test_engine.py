import pytest
from kd_train.store import StoreError, open_store, sqlite_url
from kd_train.store.engine import normalize_url, open_engine, redact_url
from kd_train.store.schema import SCHEMA_VERSION, meta
from sqlalchemy import select, text, update


def test_postgres_urls_map_to_psycopg3():
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_redact_url_hides_the_password():
    assert "s3cret" not in redact_url("postgresql://kd:s3cret@db/kd")


def test_sqlite_store_uses_wal_journal(tmp_path):
    engine = open_engine(sqlite_url(tmp_path / "s.sqlite"))
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_store_file_is_created_with_missing_parent_dirs(tmp_path):
    open_store(sqlite_url(tmp_path / "a" / "b" / "s.sqlite")).close()
    assert (tmp_path / "a" / "b" / "s.sqlite").is_file()


def test_other_schema_version_is_refused_with_a_clear_error(tmp_path):
    url = sqlite_url(tmp_path / "s.sqlite")
    store = open_store(url)
    with store.engine.begin() as conn:
        conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="99"))
    store.close()
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(url)


def test_version_1_store_is_upgraded_in_place_keeping_its_charges(tmp_path):
    url = sqlite_url(tmp_path / "s.sqlite")
    store = open_store(url)
    store.ledger.ensure_budget("b", 100)
    store.ledger.settle(
        store.ledger.reserve("b", 10, owner="w"),
        cost_nanos=7,
        key="k",
        model="m",
        body={},
        estimated=False,
    )
    with store.engine.begin() as conn:  # back to the version 1 layout
        to_version_2_layout(conn)
        conn.execute(text("ALTER TABLE charges DROP COLUMN unconfirmed_reason"))
        conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="1"))
    store.close()
    again = open_store(url)
    with again.engine.connect() as conn:
        version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
        assert version.scalar_one() == str(SCHEMA_VERSION)
    status = again.ledger.status("b")
    again.close()
    assert (status.spent_nanos, status.unconfirmed_nanos) == (7, 0)


def to_version_2_layout(conn):
    """Drop what version 3 added (the reservations' worker and lease, halts, events)."""
    for table, column in [
        ("budgets", "halted"),
        ("reservations", "host"),
        ("reservations", "pid"),
        ("reservations", "expires_at"),
    ]:
        conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    conn.execute(text("DROP TABLE budget_events"))
    conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="2"))


def test_version_2_store_is_upgraded_keeping_its_open_reservations(tmp_path):
    url = sqlite_url(tmp_path / "s.sqlite")
    store = open_store(url)
    store.ledger.ensure_budget("b", 100)
    store.ledger.reserve("b", 10, owner="old")
    with store.engine.begin() as conn:
        to_version_2_layout(conn)
    store.close()
    again = open_store(url)
    with again.engine.connect() as conn:
        version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
        assert version.scalar_one() == str(SCHEMA_VERSION)
    # an old reservation names no worker or lease: reclaim leaves it, release_owner frees it
    assert again.ledger.reclaim("b") == 0
    assert again.ledger.status("b").reserved_nanos == 10
    assert again.ledger.release_owner("b", "old") == 10
    assert again.ledger.status("b").halted is None
    again.close()


def test_reopening_a_store_keeps_its_data(tmp_path):
    url = sqlite_url(tmp_path / "s.sqlite")
    store = open_store(url)
    store.ledger.ensure_budget("b", 5)
    store.close()
    again = open_store(url)
    assert again.ledger.status("b").cap_nanos == 5
    again.close()


@pytest.mark.parametrize("url", ["not a url", "nosuchdb://x/y"])
def test_bad_store_url_raises_store_error(url):
    with pytest.raises(StoreError, match="store URL"):
        open_store(url)
