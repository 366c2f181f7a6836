"""The budget ledger: reserve the worst case before a request, settle to the real cost after.

The invariant, for every budget: ``spent + reserved <= cap``, where ``spent`` is the sum of
the budget's charges and ``reserved`` the sum of its open reservations. It holds across
threads, processes and machines because each step is one transaction that locks the
budget row first (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL):

1. :meth:`Ledger.reserve` — worst-case cost ``w`` of the next *attempt*: if
   ``spent + reserved + w > cap`` raise :class:`~kd_train.store.errors.BudgetExhaustedError`
   (the attempt is never sent); else ``reserved += w``.
2. Exactly one of:

   * :meth:`Ledger.settle` — the answer arrived with cost ``c <= w``: ``reserved -= w``,
     ``spent += c``, one *confirmed* charge row and the answer's cache entry, all in one
     transaction.
   * :meth:`Ledger.settle_unconfirmed` — the request was sent but no usable answer came
     back (timeout, dropped connection, malformed body, server error): the endpoint may
     have billed it, so ``reserved -= w``, ``spent += w``, one *unconfirmed* charge row
     at the worst case, with the reason. Nothing is cached; a later answer to the same
     request, from the cache, costs nothing, so it is never counted twice.
   * :meth:`Ledger.release` — the request was never sent (connection refused, our own
     wait interrupted) or the endpoint refused it (HTTP 4xx, 429): ``reserved -= w``.

So ``spent`` = confirmed + unconfirmed charges, and what the provider can have billed is at
most ``spent + reserved <= cap``. A reservation whose process was killed mid-request stays
open: it keeps holding its worst case, because the endpoint may have billed a response that
never arrived. :meth:`Ledger.release_owner` frees them when the operator knows better.

>>> import tempfile, pathlib
>>> from kd_train.store import open_store
>>> store = open_store(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 's.sqlite'}")
>>> store.ledger.ensure_budget("demo", cap_nanos=100)
>>> r = store.ledger.reserve("demo", 60, owner="w1")
>>> store.ledger.settle(r, cost_nanos=25, key="k" * 64, model="m", body={}, estimated=False)
>>> store.ledger.status("demo")
BudgetStatus(name='demo', cap_nanos=100, spent_nanos=25, reserved_nanos=0, unconfirmed_nanos=0)
>>> store.close()
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from sqlalchemy import Connection, delete, func, select, update

from kd_train.store.errors import BudgetExhaustedError, StoreError
from kd_train.store.schema import budgets, charges, reservations, responses


@dataclass(frozen=True)
class Reservation:
    """An open reservation: ``amount_nanos`` of ``budget`` held for one request in flight."""

    id: int
    budget: str
    amount_nanos: int
    owner: str


@dataclass(frozen=True)
class BudgetStatus:
    """A budget's figures in nano-USD.

    ``spent_nanos`` is every charge, confirmed and unconfirmed; ``unconfirmed_nanos`` is the
    part of it charged at the worst case for requests sent without a usable answer (an upper
    bound of what the provider billed for them). ``reserved_nanos`` is held by requests in
    flight.
    """

    name: str
    cap_nanos: int
    spent_nanos: int
    reserved_nanos: int
    unconfirmed_nanos: int = 0


class Ledger:
    """Budgets, reservations and charges over one engine (see the module docstring)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self._engine = engine

    def ensure_budget(self, name: str, cap_nanos: int) -> None:
        """Create budget ``name`` with ``cap_nanos``, or set the cap of an existing one.

        Raising the cap lets a stopped run continue; lowering it below what is already spent
        means no further request is admitted.
        """
        if cap_nanos < 0:
            raise StoreError(f"budget {name!r}: cap must be >= 0, got {cap_nanos} nano-USD")
        with self._engine.begin() as conn:
            row = self._lock(conn, name, missing_ok=True)
            if row is None:
                conn.execute(
                    budgets.insert().values(
                        name=name, cap_nanos=cap_nanos, spent_nanos=0, reserved_nanos=0
                    )
                )
            else:
                conn.execute(
                    update(budgets).where(budgets.c.name == name).values(cap_nanos=cap_nanos)
                )

    def reserve(self, budget: str, amount_nanos: int, owner: str) -> Reservation:
        """Hold ``amount_nanos`` (the worst case of one request) or raise if it does not fit.

        Raises:
            BudgetExhaustedError: ``spent + reserved + amount_nanos > cap``.
        """
        with self._engine.begin() as conn:
            row = self._lock(conn, budget)
            if row.spent_nanos + row.reserved_nanos + amount_nanos > row.cap_nanos:
                raise BudgetExhaustedError(
                    budget, row.cap_nanos, row.spent_nanos, row.reserved_nanos, amount_nanos
                )
            conn.execute(
                update(budgets)
                .where(budgets.c.name == budget)
                .values(reserved_nanos=budgets.c.reserved_nanos + amount_nanos)
            )
            new_id = conn.execute(
                reservations.insert().values(
                    budget=budget, amount_nanos=amount_nanos, owner=owner, created_at=time.time()
                )
            ).inserted_primary_key
        assert new_id is not None
        return Reservation(int(new_id[0]), budget, amount_nanos, owner)

    def settle(
        self,
        reservation: Reservation,
        *,
        cost_nanos: int,
        key: str,
        model: str,
        body: dict[str, Any],
        estimated: bool,
    ) -> None:
        """Close ``reservation``, charge ``cost_nanos`` and cache the response, atomically."""
        with self._engine.begin() as conn:
            self._lock(conn, reservation.budget)
            self._close(conn, reservation)
            self._charge(conn, reservation, key, cost_nanos, estimated=estimated)
            # Settles of one budget are serialised by the row lock, so check-then-insert is
            # safe; a response two workers both paid for is charged twice and cached once.
            exists = conn.execute(select(responses.c.key).where(responses.c.key == key)).first()
            if exists is None:
                conn.execute(
                    responses.insert().values(
                        key=key,
                        model=model,
                        response=json.dumps(body, sort_keys=True),
                        cost_nanos=cost_nanos,
                        estimated=estimated,
                        created_at=time.time(),
                    )
                )

    def settle_unconfirmed(self, reservation: Reservation, *, key: str, reason: str) -> None:
        """Charge ``reservation``'s full worst case: the request was sent, no answer came back.

        The provider may have billed it, so the reserved amount becomes an *unconfirmed*
        charge (``unconfirmed_reason = reason``), counted in ``spent``. No cache entry is
        written, so the same request answered later (and cached) is not charged again by
        this row. ``key`` is the request's cache key, for reconciliation with the invoice.
        """
        with self._engine.begin() as conn:
            self._lock(conn, reservation.budget)
            self._close(conn, reservation)
            self._charge(
                conn, reservation, key, reservation.amount_nanos, estimated=True, reason=reason
            )

    @staticmethod
    def _charge(
        conn: Connection,
        reservation: Reservation,
        key: str,
        cost_nanos: int,
        *,
        estimated: bool,
        reason: str | None = None,
    ) -> None:
        """Add ``cost_nanos`` to the budget's spend and record the charge row (in ``conn``)."""
        conn.execute(
            update(budgets)
            .where(budgets.c.name == reservation.budget)
            .values(spent_nanos=budgets.c.spent_nanos + cost_nanos)
        )
        conn.execute(
            charges.insert().values(
                budget=reservation.budget,
                response_key=key,
                cost_nanos=cost_nanos,
                estimated=estimated,
                owner=reservation.owner,
                created_at=time.time(),
                unconfirmed_reason=reason,
            )
        )

    def release(self, reservation: Reservation) -> None:
        """Close ``reservation`` without a charge: the request was never sent, or was refused.

        Only for failures known to leave nothing to bill (connection refused, an HTTP 4xx
        refusal); a request that may have reached the model is :meth:`settle_unconfirmed`.
        """
        with self._engine.begin() as conn:
            self._lock(conn, reservation.budget)
            self._close(conn, reservation)

    def release_owner(self, budget: str, owner: str) -> int:
        """Release every open reservation of ``owner`` (e.g. left by a killed run); return the sum.

        Only call this when the endpoint did not bill the requests those reservations held.
        """
        with self._engine.begin() as conn:
            self._lock(conn, budget)
            rows = conn.execute(
                select(reservations.c.amount_nanos).where(
                    (reservations.c.budget == budget) & (reservations.c.owner == owner)
                )
            ).all()
            total = sum(int(r.amount_nanos) for r in rows)
            conn.execute(
                delete(reservations).where(
                    (reservations.c.budget == budget) & (reservations.c.owner == owner)
                )
            )
            conn.execute(
                update(budgets)
                .where(budgets.c.name == budget)
                .values(reserved_nanos=budgets.c.reserved_nanos - total)
            )
        return total

    def status(self, budget: str) -> BudgetStatus:
        """Return the current figures of ``budget``."""
        unconfirmed = select(func.coalesce(func.sum(charges.c.cost_nanos), 0)).where(
            (charges.c.budget == budget) & charges.c.unconfirmed_reason.is_not(None)
        )
        with self._engine.connect() as conn:
            row = conn.execute(select(budgets).where(budgets.c.name == budget)).first()
            held = int(conn.execute(unconfirmed).scalar_one())
        if row is None:
            raise StoreError(f"no budget named {budget!r} in this store; create it first")
        return BudgetStatus(row.name, row.cap_nanos, row.spent_nanos, row.reserved_nanos, held)

    def charged_total(self, budget: str) -> int:
        """Return the sum of ``budget``'s charge rows, confirmed and unconfirmed (its ``spent``)."""
        query = select(func.coalesce(func.sum(charges.c.cost_nanos), 0)).where(
            charges.c.budget == budget
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _lock(conn: Connection, budget: str, *, missing_ok: bool = False) -> Any:
        row = conn.execute(
            select(budgets).where(budgets.c.name == budget).with_for_update()
        ).first()
        if row is None and not missing_ok:
            raise StoreError(f"no budget named {budget!r} in this store; create it first")
        return row

    @staticmethod
    def _close(conn: Connection, reservation: Reservation) -> None:
        deleted = conn.execute(
            delete(reservations).where(reservations.c.id == reservation.id)
        ).rowcount
        if deleted != 1:
            raise StoreError(
                f"reservation {reservation.id} of budget {reservation.budget!r} is not open "
                "(settled or released twice?)"
            )
        conn.execute(
            update(budgets)
            .where(budgets.c.name == reservation.budget)
            .values(reserved_nanos=budgets.c.reserved_nanos - reservation.amount_nanos)
        )
