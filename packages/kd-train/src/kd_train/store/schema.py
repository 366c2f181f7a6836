"""The store's tables (SQLAlchemy Core) and their schema version.

Four tables plus one key/value table for the version:

``kd_store_meta``
    ``key`` → ``value``; holds ``schema_version`` (:data:`SCHEMA_VERSION`).
``runs``
    The run registry: one row per command run (``id``, ``command``, ``config`` JSON without
    secrets, ``status``, start and finish times).
``responses``
    The response cache index: ``key`` (SHA-256 hex of model + request), ``model``, the
    response JSON, its ``cost_nanos`` and whether that cost is ``estimated``.
``budgets`` / ``reservations`` / ``charges``
    The budget ledger. A budget row holds its ``cap``, ``spent`` and ``reserved`` amounts; a
    reservation row is the worst-case cost of one request in flight; a charge row is the
    settled cost of one paid response. ``spent`` is always the sum of the budget's charges.
    A charge with an ``unconfirmed_reason`` is *unconfirmed*: the request was sent but no
    usable answer came back (timeout, dropped connection, malformed body, server error), so
    it is charged at its reserved worst case because the endpoint may have billed it.

Money is stored as integer nano-US-dollars (1 USD = 10⁹), so sums are exact.

>>> from kd_train.store.schema import SCHEMA_VERSION, metadata
>>> sorted(metadata.tables)
['budgets', 'charges', 'kd_store_meta', 'reservations', 'responses', 'runs']
>>> SCHEMA_VERSION
2
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

#: Version of the table layout; a store with another version is refused with a clear error,
#: except version 1, which :func:`kd_train.store.engine.open_engine` upgrades in place.
#: 2: ``charges.unconfirmed_reason``.
SCHEMA_VERSION = 2

#: Nano-US-dollars per US dollar (money columns are integers in this unit).
NANOS_PER_USD = 1_000_000_000

metadata = MetaData()

meta = Table(
    "kd_store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("command", String(64), nullable=False),
    Column("config", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)

responses = Table(
    "responses",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("model", String(256), nullable=False),
    Column("response", Text, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)

budgets = Table(
    "budgets",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("cap_nanos", BigInteger, nullable=False),
    Column("spent_nanos", BigInteger, nullable=False),
    Column("reserved_nanos", BigInteger, nullable=False),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("budget", String(128), ForeignKey("budgets.name"), nullable=False),
    Column("amount_nanos", BigInteger, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)

charges = Table(
    "charges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("budget", String(128), ForeignKey("budgets.name"), nullable=False),
    Column("response_key", String(64), nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    # NULL for a confirmed charge (the cost came from an answer); else why it is unconfirmed
    Column("unconfirmed_reason", Text, nullable=True),
)


def usd_to_nanos(usd: float) -> int:
    """Convert US dollars to integer nano-dollars (rounded to the nearest nano-dollar).

    >>> from kd_train.store.schema import usd_to_nanos
    >>> usd_to_nanos(0.25)
    250000000
    """
    return round(usd * NANOS_PER_USD)


def nanos_to_usd(nanos: int) -> float:
    """Convert integer nano-dollars to US dollars.

    >>> from kd_train.store.schema import nanos_to_usd
    >>> nanos_to_usd(1_500_000_000)
    1.5
    """
    return nanos / NANOS_PER_USD
