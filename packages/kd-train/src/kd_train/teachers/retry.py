"""When to retry a request and how long to wait: exponential backoff with full jitter.

The delay before retry ``n`` (``n = 1, 2, ...``) is drawn uniformly from
``[0, min(max_delay, base_delay · 2^(n-1))]`` ("full jitter", so that many clients
backing off together spread out). A ``Retry-After`` header from the server (seconds, or
an HTTP date) is a floor: the wait is ``max(retry_after, jittered)``, capped at
``max_retry_after``.

>>> import random
>>> from kd_train.teachers.retry import RetryPolicy
>>> policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
>>> rng = random.Random(0)
>>> all(0 <= policy.delay(n, rng=rng) <= min(4.0, 0.5 * 2 ** (n - 1)) for n in range(1, 8))
True
>>> policy.delay(1, retry_after=3.0, rng=rng) >= 3.0
True
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Protocol

#: The HTTP statuses worth retrying (rate limited, timeouts, server-side failures).
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class Uniform(Protocol):
    """A source of uniform random numbers, such as ``random.Random`` (for the jitter)."""

    def uniform(self, a: float, b: float) -> float:
        """Return a number drawn uniformly from ``[a, b]``."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts to make and how long to wait between them (seconds).

    Attributes:
        max_attempts: total attempts per request, the first included (>= 1).
        base_delay: the backoff's first ceiling; tests set it tiny.
        max_delay: the largest backoff ceiling.
        max_retry_after: the longest ``Retry-After`` honoured; longer ones are capped.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("base_delay, max_delay and max_retry_after must be >= 0")

    def delay(
        self, retry: int, retry_after: float | None = None, rng: Uniform | None = None
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        jittered = (rng or random).uniform(0.0, ceiling)
        if retry_after is None:
            return jittered
        return max(min(retry_after, self.max_retry_after), jittered)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if absent/bad.

    >>> from kd_train.teachers.retry import parse_retry_after
    >>> parse_retry_after("2.5")
    2.5
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now=1445412480.0)
    5.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
