"""The store's tables (SQLAlchemy Core) and their schema version.

Five tables plus one key/value table for the version:

``kd_store_meta``
    ``key`` → ``value``; holds ``schema_version`` (:data:`SCHEMA_VERSION`).
``runs``
    The run registry: one row per command run (``id``, ``command``, ``config`` JSON without
    secrets, ``status``, start and finish times).
``responses``
    The response cache index: ``key`` (SHA-256 hex of model + request), ``model``, the
    response JSON, its ``cost_nanos`` and whether that cost is ``estimated``.
``budgets`` / ``reservations`` / ``charges`` / ``budget_events``
    The budget ledger. A budget row holds its ``cap``, ``spent`` and ``reserved`` amounts,
    and ``halted`` (why no request may be sent, or NULL); a reservation row is the
    worst-case cost of one request in flight, with the worker holding it (``owner``,
    ``host`` identity, ``pid``) and when its lease ``expires_at``; a charge row is the
    settled cost of one paid response. ``spent`` is always the sum of the budget's charges.
    An event row records who created a budget, changed its cap, halted it or reclaimed a
    dead worker's reservation, and when.
    A charge with an ``unconfirmed_reason`` is *unconfirmed*: the request was sent but no
    usable answer came back (timeout, dropped connection, malformed body, server error), so
    it is charged at its reserved worst case because the endpoint may have billed it.

Money is stored as integer nano-US-dollars (1 USD = 10⁹), so sums are exact.

>>> from kd_train.store.schema import SCHEMA_VERSION, metadata
>>> sorted(metadata.tables)
['budget_events', 'budgets', 'charges', 'kd_store_meta', 'reservations', 'responses', 'runs']
>>> SCHEMA_VERSION
3
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
#: except versions 1 and 2, which :func:`kd_train.store.engine.open_engine` upgrades in place.
#: 2: ``charges.unconfirmed_reason``. 3: ``budgets.halted``, the reservations' ``host``,
#: ``pid`` and ``expires_at``, and the ``budget_events`` table.
SCHEMA_VERSION = 3

#: The cap, in nano-USD, of a budget created without one (no practical limit).
UNLIMITED_NANOS = 2**62

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
    # NULL while requests may be sent; else why not (an answer billed past its reservation)
    Column("halted", Text, nullable=True),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("budget", String(128), ForeignKey("budgets.name"), nullable=False),
    Column("amount_nanos", BigInteger, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    # The worker's host identity and process id (NULL in rows of a version 2 store), and
    # the end of the reservation's lease, after which any worker may reclaim it.
    Column("host", String(512), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("expires_at", Float, nullable=True),
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


budget_events = Table(
    "budget_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("budget", String(128), nullable=False),
    # created | cap_changed | halted | resumed | reclaimed
    Column("kind", String(32), nullable=False),
    Column("old_cap_nanos", BigInteger, nullable=True),
    Column("new_cap_nanos", BigInteger, nullable=True),
    Column("detail", Text, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
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
