"""Which fault each request to the loopback server gets.

``429``: HTTP 429 with ``Retry-After``; ``500``: HTTP 500; ``slow``: answers after
``slow_seconds``; ``stall``: waits ``stall_seconds`` (longer than a client timeout) then
answers; ``drop``: computes the completion, then closes the connection without a response;
``malformed``: computes the completion, then sends HTTP 200 with a truncated JSON body;
``empty``: computes (and bills) the completion, then answers HTTP 200 with an empty one
(``finish_reason: stop`` at once, as an instruct model without its chat template does).

>>> from kd_train.testing import FaultPlan
>>> plan = FaultPlan(script=["500", "drop"])
>>> [plan.next() for _ in range(3)]
['500', 'drop', 'ok']
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

#: The faults a :class:`FaultPlan` can inject.
FAULTS = ("429", "500", "slow", "stall", "drop", "malformed", "empty")


@dataclass
class FaultPlan:
    """Which fault (or ``"ok"``) each request gets: the ``script`` first, then ``rates``."""

    script: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = {f for f in [*self.script, *self.rates] if f not in (*FAULTS, "ok")}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
        if sum(self.rates.values()) > 1.0:
            raise ValueError(f"fault rates add up to more than 1: {self.rates}")
        self._rng = random.Random(self.seed)  # noqa: S311 - test fault draws, not crypto
        self._lock = threading.Lock()

    def next(self) -> str:
        """Return the fault for the next request (thread-safe)."""
        with self._lock:
            if self.script:
                return self.script.pop(0)
            draw = self._rng.random()
            for fault, rate in sorted(self.rates.items()):
                if draw < rate:
                    return fault
                draw -= rate
            return "ok"
