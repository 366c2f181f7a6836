"""Retries at the top of the stack: every attempt goes through the whole stack again.

Failures that are not ``final`` (429, 5xx, timeouts, dropped connections, malformed
bodies) are retried after an exponential backoff with jitter that honours ``Retry-After``
(:class:`~kd_train.teachers.retry.RetryPolicy`); so every retry checks the cache and the
cap again before it is sent.
"""

from __future__ import annotations

import logging
import threading

from kd_train.teachers.http.exchange import (
    Call,
    Count,
    HTTPTeacherError,
    Layer,
    RequestRefusedError,
    Response,
)
from kd_train.teachers.retry import RetryPolicy, Uniform

logger = logging.getLogger(__name__)


class Retrying:
    """Send a call through ``inner`` until it is answered or ``policy`` gives up.

    Args:
        inner: the rest of the stack.
        policy: how many attempts, and the backoff between them.
        rng: draws the backoff jitter.
        count: adds to the teacher's counters (``retries``, ``failed``).
        base_url: the endpoint, for log lines and messages.
    """

    def __init__(
        self, inner: Layer, policy: RetryPolicy, rng: Uniform, count: Count, base_url: str
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._rng = rng
        self._count = count
        self._base_url = base_url

    def send(self, call: Call) -> Response:
        """The answer to ``call``.

        Raises:
            kd_train.teachers.http.RequestRefusedError: the endpoint refused the request as invalid.
            HTTPTeacherError: a final failure (such as HTTP 401), or every attempt failed.
        """
        policy = self._policy
        problem = "no attempt made"
        for attempt in range(1, policy.max_attempts + 1):
            outcome = self._inner.send(call)
            if isinstance(outcome, Response):
                return outcome
            if outcome.final:
                self._count(failed=1)
                if outcome.refused:
                    raise RequestRefusedError(outcome.problem)
                raise HTTPTeacherError(outcome.problem)
            problem = outcome.problem
            if attempt == policy.max_attempts:
                break
            wait = policy.delay(attempt, outcome.retry_after, self._rng)
            logger.warning(
                "POST %s%s: %s; retry %d/%d in %.2f s",
                self._base_url,
                call.path,
                problem,
                attempt,
                policy.max_attempts - 1,
                wait,
            )
            self._count(retries=1)
            threading.Event().wait(wait)
        self._count(failed=1)
        raise HTTPTeacherError(
            f"POST {self._base_url}{call.path} failed after {policy.max_attempts} attempts: "
            f"{problem}. Check that the endpoint is up, or raise retry.max_attempts"
        )
