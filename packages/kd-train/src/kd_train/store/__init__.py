"""The store: run registry, response cache index and budget ledger (SQLAlchemy Core).

A SQLite file in the run directory by default; a ``postgresql://`` URL lets several
workers on several machines share one budget and one cache without overspending.

>>> import tempfile, pathlib
>>> from kd_train.store import open_store
>>> store = open_store(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 'store.sqlite'}")
>>> store.ledger.ensure_budget("b", cap_nanos=10)
>>> store.ledger.status("b").cap_nanos
10
>>> store.close()
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy

from kd_train.store.cache import CachedResponse, ResponseCache, cache_key
from kd_train.store.engine import normalize_url, open_engine, redact_url, sqlite_url
from kd_train.store.errors import (
    BudgetCapChangeError,
    BudgetExhaustedError,
    BudgetHaltedError,
    BudgetOverrunError,
    StoreError,
)
from kd_train.store.ledger import BudgetEvent, BudgetStatus, Ledger, Reservation
from kd_train.store.runs import RunRegistry
from kd_train.store.schema import SCHEMA_VERSION, UNLIMITED_NANOS, nanos_to_usd, usd_to_nanos


@dataclass(frozen=True)
class Store:
    """An open store: its engine and the three views over it."""

    engine: sqlalchemy.Engine
    cache: ResponseCache
    ledger: Ledger
    runs: RunRegistry

    def close(self) -> None:
        """Release the store's database connections."""
        self.engine.dispose()


def open_store(url: str) -> Store:
    """Open the store at ``url``, creating its tables if needed.

    See :func:`kd_train.store.engine.open_engine` for the back ends and the errors.
    """
    engine = open_engine(url)
    return Store(engine, ResponseCache(engine), Ledger(engine), RunRegistry(engine))


__all__ = [
    "SCHEMA_VERSION",
    "UNLIMITED_NANOS",
    "BudgetCapChangeError",
    "BudgetEvent",
    "BudgetExhaustedError",
    "BudgetHaltedError",
    "BudgetOverrunError",
    "BudgetStatus",
    "CachedResponse",
    "Ledger",
    "Reservation",
    "ResponseCache",
    "RunRegistry",
    "Store",
    "StoreError",
    "cache_key",
    "nanos_to_usd",
    "normalize_url",
    "open_engine",
    "open_store",
    "redact_url",
    "sqlite_url",
    "usd_to_nanos",
]
