"""Client-side limits around the rest of the stack: calls in flight, and starts per minute.

At most ``concurrency`` calls are in flight and at most ``rpm`` start per minute
(:class:`~kd_train.teachers.ratelimit.RateLimiter`).

The budget sits inside the limits, so a reservation is only taken by a call that is about
to be sent, never by one still waiting for its turn.
"""

from __future__ import annotations

import threading

from kd_train.teachers.http.exchange import Call, Failure, Layer, Response
from kd_train.teachers.ratelimit import RateLimiter


class Throttle:
    """Wait for a start under ``rpm`` and a free slot of ``concurrency``, then ask ``inner``."""

    def __init__(self, inner: Layer, rpm: float | None, concurrency: int) -> None:
        self._inner = inner
        self._limiter = RateLimiter(rpm)
        self._slots = threading.BoundedSemaphore(concurrency)

    def send(self, call: Call) -> Response | Failure:
        """Send ``call`` through ``inner`` once the limits allow it."""
        self._limiter.acquire()
        with self._slots:
            return self._inner.send(call)
