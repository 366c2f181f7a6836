"""Open a store: URL normalisation, the SQLAlchemy engine and the schema check.

Two back ends, one behaviour:

* **SQLite** (the default, a file in the run directory): WAL journal, ``synchronous=FULL``
  and a busy timeout; every transaction starts with ``BEGIN IMMEDIATE`` so that a
  reservation's read-check-write takes the write lock before it reads.
* **PostgreSQL** (``postgresql://...``, mapped to the psycopg 3 driver): several workers on
  several machines share one budget and cache; reservations lock the budget row with
  ``SELECT ... FOR UPDATE``; tables are created under an advisory lock so that workers
  starting together do not race.

>>> import tempfile, pathlib
>>> from kd_train.store.engine import open_engine, sqlite_url
>>> url = sqlite_url(pathlib.Path(tempfile.mkdtemp()) / "store.sqlite")
>>> engine = open_engine(url)
>>> engine.dialect.name
'sqlite'
>>> engine.dispose()
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from kd_train.store.errors import StoreError
from kd_train.store.schema import SCHEMA_VERSION, meta, metadata

#: Seconds a SQLite writer waits for the lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60

# Query parameters of a database URL that may hold a credential (a part of the name).
_SECRET_QUERY = re.compile(r"pass|key|token|secret|auth|cred", re.IGNORECASE)

# Arbitrary constant key of the PostgreSQL advisory lock taken while creating tables.
_PG_SCHEMA_LOCK = 0x6B6473746F7265


def sqlite_url(path: str | Path) -> str:
    """Return the SQLAlchemy URL of a SQLite file.

    >>> from kd_train.store.engine import sqlite_url
    >>> sqlite_url("/runs/a/store.sqlite")
    'sqlite:////runs/a/store.sqlite'
    """
    return f"sqlite:///{Path(path).absolute()}"


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` URLs to the psycopg 3 driver; keep others.

    >>> from kd_train.store.engine import normalize_url
    >>> normalize_url("postgresql://u@db:5432/kd")
    'postgresql+psycopg://u@db:5432/kd'
    >>> normalize_url("sqlite:///x.db")
    'sqlite:///x.db'
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def redact_url(url: str) -> str:
    """Return ``url`` with any password hidden, for messages and logs.

    The password before the host, and the value of every query parameter that may hold a
    credential (``password``, ``sslpassword``, ``passfile``, ``*key*``, ``*token*``, ...),
    are hidden (``***`` and ``redacted``).

    >>> from kd_train.store.engine import redact_url
    >>> redact_url("postgresql://kd:s3cret@db/kd")
    'postgresql://kd:***@db/kd'
    >>> redact_url("postgresql://kd@db/kd?password=s3cret&sslmode=require")
    'postgresql://kd@db/kd?password=redacted&sslmode=require'
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "<unparseable store URL>"
    hidden = {k: "redacted" for k in parsed.query if _SECRET_QUERY.search(k)}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


def open_engine(url: str) -> Engine:
    """Create the engine for ``url``, create missing tables and check the schema version.

    Raises:
        StoreError: the URL is not understood, the driver is missing, the database cannot
            be reached, or it holds a store of another schema version.
    """
    full = normalize_url(url)
    try:
        parsed = make_url(full)
    except (ArgumentError, ValueError) as exc:
        # a URL with a password may fail to parse (a bad port): echo only one without
        shown = url if "@" not in url and not _SECRET_QUERY.search(url) else redact_url(url)
        raise StoreError(
            f"store URL {shown!r} is not a database URL; use e.g. sqlite:///run/store.sqlite "
            "or postgresql://user@host/db"
        ) from exc
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(full, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(
            f"no database driver for store URL {redact_url(url)!r} ({exc}); for PostgreSQL "
            "install kd-train[postgres] (psycopg 3)"
        ) from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    try:
        _create_schema(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open store {redact_url(url)!r}: {exc}") from exc
    except StoreError:
        engine.dispose()
        raise
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN IMMEDIATE instead of pysqlite's
        # deferred BEGIN, which would let two readers both pass a budget check.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade_from_1(conn: Connection) -> None:
    """Version 1 -> 2: add ``charges.unconfirmed_reason`` (NULL: every old charge is confirmed)."""
    conn.execute(text("ALTER TABLE charges ADD COLUMN unconfirmed_reason TEXT"))
    _set_version(conn, 2)


def _upgrade_from_2(conn: Connection) -> None:
    """Version 2 -> 3: ``budgets.halted`` and the reservations' worker and lease columns.

    Old reservations get NULL host, pid and lease: nothing tells whether their worker is
    alive, so only :meth:`~kd_train.store.ledger.Ledger.release_owner` closes them.
    ``budget_events`` is a new table, made by ``create_all``.
    """
    conn.execute(text("ALTER TABLE budgets ADD COLUMN halted TEXT"))
    conn.execute(text("ALTER TABLE reservations ADD COLUMN host VARCHAR(512)"))
    conn.execute(text("ALTER TABLE reservations ADD COLUMN pid INTEGER"))
    conn.execute(text("ALTER TABLE reservations ADD COLUMN expires_at FLOAT"))
    _set_version(conn, 3)


def _set_version(conn: Connection, version: int) -> None:
    conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(version)))


def _create_schema(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
        metadata.create_all(conn)
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is None:
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif found in ("1", "2"):
            if found == "1":
                _upgrade_from_1(conn)
            _upgrade_from_2(conn)
        elif found != str(SCHEMA_VERSION):
            raise StoreError(
                f"store {redact_url(str(engine.url))!r} has schema version {found}; this "
                f"kd-train reads version {SCHEMA_VERSION}. Use a new store (another --store) "
                "or the kd-train release that wrote it"
            )
