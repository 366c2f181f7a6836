"""Client-side limits: at most ``concurrency`` requests in flight, ``rpm`` starts per minute.

:class:`RateLimiter` spaces request starts evenly, one every ``60 / rpm`` seconds (a
token bucket of depth one), which never exceeds ``rpm`` in any 60-second window. It is
thread-safe; ``clock`` and ``sleep`` are injectable so tests do not wait.

>>> from kd_train.teachers.ratelimit import RateLimiter
>>> now = [0.0]
>>> def fake_sleep(seconds):
...     now[0] += seconds
>>> limiter = RateLimiter(rpm=120, clock=lambda: now[0], sleep=fake_sleep)
>>> for _ in range(3):
...     limiter.acquire()
>>> now[0]  # three starts, 0.5 s apart
1.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Admit at most ``rpm`` request starts per minute (``rpm=None``: no limit)."""

    def __init__(
        self,
        rpm: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rpm is not None and rpm <= 0:
            raise ValueError(f"rpm must be > 0 (or None for no limit), got {rpm}")
        self._interval = 0.0 if rpm is None else 60.0 / rpm
        self._clock = clock
        self._sleep = sleep
        self._next = -float("inf")
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until the next request may start."""
        if self._interval == 0.0:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)
