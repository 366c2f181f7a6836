"""The budget ledger: reserve the worst case before a request, settle to the real cost after.

The invariant, for every budget: ``spent + reserved <= cap``, where ``spent`` is the sum of
the budget's charges and ``reserved`` the sum of its open reservations. It holds across
threads, processes and machines because each step is one transaction that locks the
budget row first (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL):

1. :meth:`Ledger.reserve` — worst-case cost ``w`` of the next *attempt*: if the budget is
   halted raise :class:`~kd_train.store.errors.BudgetHaltedError`; if
   ``spent + reserved + w > cap`` raise :class:`~kd_train.store.errors.BudgetExhaustedError`
   (the attempt is never sent); else ``reserved += w``.
2. Exactly one of:

   * :meth:`Ledger.settle` — the answer arrived with cost ``c``: ``reserved -= w``,
     ``spent += c``, one *confirmed* charge row and the answer's cache entry, all in one
     transaction. When ``c > w`` (an endpoint that bills past ``max_tokens``) the same
     transaction *halts* the budget: every later :meth:`Ledger.reserve`, by any worker, raises.
   * :meth:`Ledger.settle_unconfirmed` — the request was sent but no usable answer came
     back (timeout, dropped connection, malformed body, server error): the endpoint may
     have billed it, so ``reserved -= w``, ``spent += w``, one *unconfirmed* charge row
     at the worst case, with the reason. Nothing is cached; a later answer to the same
     request, from the cache, costs nothing, so it is never counted twice.
   * :meth:`Ledger.release` — the request was never sent (connection refused, our own
     wait interrupted) or the endpoint refused it (HTTP 4xx, 429): ``reserved -= w``.

So ``spent`` = confirmed + unconfirmed charges, and what the provider can have billed is at
most ``spent + reserved <= cap`` while every answer costs at most its reservation.

**Overshoot bound.** An endpoint that bills an answer past its reservation breaks that
premise. The first such settle halts the budget, so afterwards no request is sent under
it; only the requests already in flight at that moment can still be billed past their
reservations. Hence ``spent <= cap + Σ (billed_i - w_i)`` over at most ``N`` requests, where
``N`` is the number of requests in flight on the budget (at most the sum of the workers'
``concurrency``): with one worker, at most ``concurrency`` times the largest excess.

**Shared caps.** :meth:`Ledger.open_budget` creates a budget or joins an existing one; it
never changes an existing cap unless asked (``change=True``), and every creation, cap
change, halt and reclaim is an event row (:meth:`Ledger.events`) and a warning in the log.

**Dead workers.** A reservation records its worker (``owner``, host identity, pid) and a
lease. :meth:`Ledger.reclaim` (run by every worker when it opens the budget) closes the
reservations of workers known to be gone: a process of this host identity that no longer
runs, or any reservation whose lease expired. The request may have been billed before its
worker died, so each becomes an unconfirmed charge at its worst case (the cap's headroom is
not given back; raise the cap after reconciling with the invoice).
:meth:`Ledger.release_owner` frees reservations without a charge when the operator knows
they were not billed.

>>> import tempfile, pathlib
>>> from kd_train.store import open_store
>>> store = open_store(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 's.sqlite'}")
>>> store.ledger.ensure_budget("demo", cap_nanos=100)
>>> r = store.ledger.reserve("demo", 60, owner="w1")
>>> store.ledger.settle(r, cost_nanos=25, key="k" * 64, model="m", body={}, estimated=False)
>>> status = store.ledger.status("demo")
>>> status.spent_nanos, status.reserved_nanos
(25, 0)
>>> store.close()
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from sqlalchemy import Connection, delete, func, select, update

from kd_train.store.errors import (
    BudgetCapChangeError,
    BudgetExhaustedError,
    BudgetHaltedError,
    StoreError,
)
from kd_train.store.schema import (
    UNLIMITED_NANOS,
    budget_events,
    budgets,
    charges,
    reservations,
    responses,
)
from kd_train.store.workers import host_identity, process_alive

logger = logging.getLogger(__name__)

#: Seconds a reservation is leased to its worker when the caller gives no lease.
DEFAULT_LEASE_S = 3600.0

#: The ``response_key`` of the unconfirmed charge a reclaimed reservation becomes.
RECLAIMED_KEY = "reclaimed-reservation:{id}"


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
    flight. ``halted`` says why no request may be sent under the budget (``None``: they may).
    """

    name: str
    cap_nanos: int
    spent_nanos: int
    reserved_nanos: int
    unconfirmed_nanos: int = 0
    halted: str | None = None


@dataclass(frozen=True)
class BudgetEvent:
    """One row of the budget's audit log (see :meth:`Ledger.events`)."""

    budget: str
    kind: str
    old_cap_nanos: int | None
    new_cap_nanos: int | None
    detail: str
    actor: str
    created_at: float


class Ledger:
    """Budgets, reservations and charges over one engine (see the module docstring)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self._engine = engine

    # -- budgets ----------------------------------------------------------------------

    def open_budget(
        self, name: str, cap_nanos: int | None, *, change: bool = False, actor: str = ""
    ) -> str | None:
        """Create budget ``name``, or join it; change its cap only when ``change`` is true.

        Returns what changed in an existing budget (for the caller to show), else ``None``.

        A new budget gets ``cap_nanos`` (``None``:
        :data:`~kd_train.store.schema.UNLIMITED_NANOS`). An existing one keeps its cap when
        ``cap_nanos`` is ``None`` or equal to it. With ``change``, the cap becomes
        ``cap_nanos`` and a halted budget is resumed; both are recorded as events with
        ``actor`` and logged as warnings.

        Raises:
            BudgetCapChangeError: ``cap_nanos`` differs from the existing cap and ``change``
                is false.
            StoreError: ``cap_nanos`` is negative, or ``change`` without a cap.
        """
        if cap_nanos is not None and cap_nanos < 0:
            raise StoreError(f"budget {name!r}: cap must be >= 0, got {cap_nanos} nano-USD")
        if change and cap_nanos is None:
            raise StoreError(f"budget {name!r}: changing the cap needs the new cap")
        with self._engine.begin() as conn:
            row = self._lock(conn, name, missing_ok=True)
            if row is None:
                cap = UNLIMITED_NANOS if cap_nanos is None else cap_nanos
                conn.execute(
                    budgets.insert().values(
                        name=name, cap_nanos=cap, spent_nanos=0, reserved_nanos=0
                    )
                )
                self._event(conn, name, "created", None, cap, "budget created", actor)
                return None
            if cap_nanos is None or (cap_nanos == row.cap_nanos and row.halted is None):
                return None
            if not change:
                if cap_nanos == row.cap_nanos:
                    return None
                raise BudgetCapChangeError(name, row.cap_nanos, cap_nanos)
            conn.execute(
                update(budgets)
                .where(budgets.c.name == name)
                .values(cap_nanos=cap_nanos, halted=None)
            )
            detail = f"cap changed from {row.cap_nanos} to {cap_nanos} nano-USD"
            if row.halted is not None:
                detail += f"; resumed (halted: {row.halted})"
            self._event(conn, name, "cap_changed", row.cap_nanos, cap_nanos, detail, actor)
        logger.warning("budget %r: %s by %s", name, detail, actor or "an unnamed caller")
        return detail

    def ensure_budget(self, name: str, cap_nanos: int, actor: str = "ensure_budget") -> None:
        """Create budget ``name`` with ``cap_nanos``, or set the cap of an existing one.

        The explicit form of :meth:`open_budget` with ``change=True`` (recorded and logged).
        Raising the cap lets a stopped run continue; lowering it below what is already spent
        means no further request is admitted.
        """
        self.open_budget(name, cap_nanos, change=True, actor=actor)

    def events(self, budget: str) -> list[BudgetEvent]:
        """The audit log of ``budget``, oldest first."""
        query = select(budget_events).where(budget_events.c.budget == budget).order_by("id")
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            BudgetEvent(
                r.budget, r.kind, r.old_cap_nanos, r.new_cap_nanos, r.detail, r.actor,
                r.created_at,
            )
            for r in rows
        ]  # fmt: skip

    # -- one request --------------------------------------------------------------------

    def reserve(
        self, budget: str, amount_nanos: int, owner: str, *, lease_s: float = DEFAULT_LEASE_S
    ) -> Reservation:
        """Hold ``amount_nanos`` (the worst case of one request) or raise if it does not fit.

        The reservation records this process (host identity and pid) and a lease of
        ``lease_s`` seconds, after which :meth:`reclaim` may close it.

        Raises:
            BudgetHaltedError: an earlier answer was billed past its reservation.
            BudgetExhaustedError: ``spent + reserved + amount_nanos > cap``.
        """
        now = time.time()
        with self._engine.begin() as conn:
            row = self._lock(conn, budget)
            if row.halted is not None:
                raise BudgetHaltedError(budget, row.halted)
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
                    budget=budget,
                    amount_nanos=amount_nanos,
                    owner=owner,
                    created_at=now,
                    host=host_identity(),
                    pid=os.getpid(),
                    expires_at=now + lease_s,
                )
            ).inserted_primary_key
        if new_id is None:  # every backend returns the key of an inserted row
            raise StoreError(f"budget {budget!r}: the reservation got no id")
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
        """Close ``reservation``, charge ``cost_nanos`` and cache the response, atomically.

        A cost above the reservation halts the budget in the same transaction. A
        reservation already reclaimed (its lease ran out) stays charged at its worst case
        and the answer is charged as well: counted twice rather than not at all.
        """
        with self._engine.begin() as conn:
            self._lock(conn, reservation.budget)
            self._close(conn, reservation)
            self._charge(conn, reservation, key, cost_nanos, estimated=estimated)
            if cost_nanos > reservation.amount_nanos:
                self._halt(conn, reservation, cost_nanos)
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
            if self._close(conn, reservation):
                self._charge(
                    conn, reservation, key, reservation.amount_nanos, estimated=True, reason=reason
                )

    def release(self, reservation: Reservation) -> None:
        """Close ``reservation`` without a charge: the request was never sent, or was refused.

        Only for failures known to leave nothing to bill (connection refused, an HTTP 4xx
        refusal); a request that may have reached the model is :meth:`settle_unconfirmed`.
        """
        with self._engine.begin() as conn:
            self._lock(conn, reservation.budget)
            self._close(conn, reservation)

    # -- reservations left behind --------------------------------------------------------

    def reclaim(self, budget: str, *, actor: str = "", now: float | None = None) -> int:
        """Close the reservations of dead workers; return how many nano-USD they held.

        A reservation is reclaimed when its process, of this host identity, no longer runs,
        or when its lease has expired and its process cannot be seen to run. Each becomes an
        unconfirmed charge at its worst case (the request may have been billed before its
        worker died), recorded as a ``reclaimed`` event and logged.
        """
        moment = time.time() if now is None else now
        with self._engine.begin() as conn:
            self._lock(conn, budget)
            rows = conn.execute(select(reservations).where(reservations.c.budget == budget)).all()
            total = 0
            for row in rows:
                why = _gone(row, moment)
                if why is None:
                    continue
                held = Reservation(row.id, budget, row.amount_nanos, row.owner)
                self._close(conn, held)
                reason = f"reclaimed: worker {row.owner} {why}; it may have been billed"
                key = RECLAIMED_KEY.format(id=row.id)
                self._charge(conn, held, key, row.amount_nanos, estimated=True, reason=reason)
                detail = f"reservation {row.id} of {row.amount_nanos} nano-USD {reason}"
                self._event(conn, budget, "reclaimed", None, None, detail, actor)
                logger.warning("budget %r: %s", budget, detail)
                total += int(row.amount_nanos)
        return total

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

    # -- reading ------------------------------------------------------------------------

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
        return BudgetStatus(
            row.name, row.cap_nanos, row.spent_nanos, row.reserved_nanos, held, row.halted
        )

    def charged_total(self, budget: str) -> int:
        """Return the sum of ``budget``'s charge rows, confirmed and unconfirmed (its ``spent``)."""
        query = select(func.coalesce(func.sum(charges.c.cost_nanos), 0)).where(
            charges.c.budget == budget
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- inside a transaction ---------------------------------------------------------------

    @staticmethod
    def _lock(conn: Connection, budget: str, *, missing_ok: bool = False) -> Any:
        row = conn.execute(
            select(budgets).where(budgets.c.name == budget).with_for_update()
        ).first()
        if row is None and not missing_ok:
            raise StoreError(f"no budget named {budget!r} in this store; create it first")
        return row

    @staticmethod
    def _close(conn: Connection, reservation: Reservation) -> bool:
        """Delete the reservation; ``False`` when it was reclaimed (already charged)."""
        deleted = conn.execute(
            delete(reservations).where(reservations.c.id == reservation.id)
        ).rowcount
        if deleted != 1:
            reclaimed = conn.execute(
                select(charges.c.id).where(
                    charges.c.response_key == RECLAIMED_KEY.format(id=reservation.id)
                )
            ).first()
            if reclaimed is not None:
                return False
            raise StoreError(
                f"reservation {reservation.id} of budget {reservation.budget!r} is not open "
                "(settled or released twice?)"
            )
        conn.execute(
            update(budgets)
            .where(budgets.c.name == reservation.budget)
            .values(reserved_nanos=budgets.c.reserved_nanos - reservation.amount_nanos)
        )
        return True

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

    def _halt(self, conn: Connection, reservation: Reservation, cost_nanos: int) -> None:
        """Halt the budget: an answer cost ``cost_nanos``, more than its reservation."""
        reason = (
            f"an answer was billed {cost_nanos} nano-USD, more than the "
            f"{reservation.amount_nanos} reserved for it (worker {reservation.owner})"
        )
        row = conn.execute(select(budgets.c.halted).where(budgets.c.name == reservation.budget))
        if row.scalar_one() is None:
            conn.execute(
                update(budgets).where(budgets.c.name == reservation.budget).values(halted=reason)
            )
            self._event(conn, reservation.budget, "halted", None, None, reason, reservation.owner)
            logger.warning("budget %r halted: %s", reservation.budget, reason)

    @staticmethod
    def _event(
        conn: Connection,
        budget: str,
        kind: str,
        old: int | None,
        new: int | None,
        detail: str,
        actor: str,
    ) -> None:
        conn.execute(
            budget_events.insert().values(
                budget=budget,
                kind=kind,
                old_cap_nanos=old,
                new_cap_nanos=new,
                detail=detail,
                actor=actor,
                created_at=time.time(),
            )
        )


def _gone(row: Any, now: float) -> str | None:
    """Why the worker of reservation ``row`` is known to be gone, or ``None``."""
    alive = process_alive(row.host, row.pid)
    if alive is False:
        return f"(pid {row.pid} on this host) no longer runs"
    if alive is None and row.expires_at is not None and row.expires_at < now:
        return f"let its lease expire {now - row.expires_at:.0f} s ago"
    return None
