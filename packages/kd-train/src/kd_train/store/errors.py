"""Errors raised by :mod:`kd_train.store`."""

from __future__ import annotations

from kd_train.errors import KDTrainError


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
            f"cost up to ${needed / 1e9:.6f}. Raise the budget (e.g. --budget) and rerun: "
            "work already paid for is served from the cache for free"
        )
