"""Errors raised by :mod:`kd_train.store`."""

from __future__ import annotations

from kd_train.errors import KDTrainError
from kd_train.store.schema import UNLIMITED_NANOS


def _usd(nanos: int) -> str:
    return "no cap" if nanos >= UNLIMITED_NANOS else f"a cap of ${nanos / 1e9:.6f}"


class StoreError(KDTrainError):
    """The store cannot be opened or used (bad URL, unknown schema version, missing driver)."""


class BudgetExhaustedError(KDTrainError):
    """The next request could cost more than what is left of the budget.

    Raised *before* the request is sent, so the spend never exceeds the cap. The attributes
    carry the figures (nano-USD) for the message a command line prints.
    """

    def __init__(self, budget: str, cap: int, spent: int, reserved: int, needed: int) -> None:
        self.budget = budget
        self.cap = cap
        self.spent = spent
        self.reserved = reserved
        self.needed = needed
        super().__init__(
            f"budget {budget!r} exhausted: spent ${spent / 1e9:.6f} and ${reserved / 1e9:.6f} "
            f"held by requests in flight of the ${cap / 1e9:.6f} cap; the next request could "
            f"cost up to ${needed / 1e9:.6f}. Raise the cap (--budget with --change-budget) "
            "and rerun: work already paid for is served from the cache for free"
        )


class BudgetOverrunError(KDTrainError):
    """The endpoint billed one request more than the worst case reserved for it.

    That happens only when the provider ignores ``max_tokens`` or counts tokens differently
    from the reservation's bound. The ledger records the real (larger) cost, so the spend
    can pass the cap by this request's excess; the caller must stop sending. The attributes
    carry the figures (nano-USD).
    """

    def __init__(self, budget: str, reserved: int, billed: int, usage: str) -> None:
        self.budget = budget
        self.reserved = reserved
        self.billed = billed
        super().__init__(
            f"budget {budget!r}: the endpoint billed ${billed / 1e9:.6f} for one request "
            f"({usage}), more than the ${reserved / 1e9:.6f} reserved as its worst case; it "
            "does not honour max_tokens or counts tokens differently. The ledger holds the "
            "real cost and the budget is halted: no worker sharing it sends another request "
            "until its cap is set again (--budget with --change-budget). Check the "
            "endpoint's usage reporting before that"
        )


class BudgetHaltedError(BudgetOverrunError):
    """The budget is halted: an earlier answer was billed past its reservation.

    Raised *before* a request is sent, by every worker that shares the budget, until an
    operator sets the cap again (``--budget`` with ``--change-budget``).
    """

    def __init__(self, budget: str, reason: str) -> None:
        self.budget = budget
        self.reason = reason
        self.reserved = self.billed = 0
        KDTrainError.__init__(
            self,
            f"budget {budget!r} is halted: {reason}. No request is sent under it until "
            "its cap is set again (--budget with --change-budget; teacher.http."
            "change_budget: true in a run config), after checking the endpoint's usage "
            "reporting",
        )


class BudgetCapChangeError(KDTrainError):
    """A run asks for another cap than the shared budget's, without saying it may change it."""

    def __init__(self, budget: str, current: int, asked: int) -> None:
        self.budget = budget
        self.current = current
        self.asked = asked
        super().__init__(
            f"budget {budget!r} in this store has {_usd(current)}; this run asks for "
            f"{_usd(asked)}. Workers share this cap, so it changes only when "
            "asked to: add --change-budget (kd-train generate) or teacher.http.change_budget: "
            "true (run config) to set it, or leave out the budget to use the current cap"
        )
