"""What the parts of an :class:`~kd_train.teachers.http.HTTPTeacher` pass each other.

A :class:`Call` goes down the stack (retry, cache, limits, budget, wire); a
:class:`~kd_train.teachers.http.Response` or a :class:`Failure` comes back up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kd_train.errors import KDTrainError

#: Adds to the teacher's :class:`~kd_train.teachers.http.Counters`, e.g. ``count(retries=1)``.
Count = Callable[..., None]


class HTTPTeacherError(KDTrainError):
    """A request failed for good, or the endpoint cannot score for this student.

    Failed for good: a non-retryable status, or retries exhausted. Cannot score: another
    tokenizer than the student's, or fewer alternatives than asked.
    """


class RequestRefusedError(HTTPTeacherError):
    """The endpoint refused the request as invalid (a validation error): not retried, not billed.

    Raised for a 4xx, and for a 5xx whose body carries a validation error (llama.cpp's
    server answers a request it cannot parse with HTTP 500).
    """


@dataclass(frozen=True)
class Call:
    """One request: the URL path, the JSON body, its cache key and its worst-case cost.

    ``worst`` is the cost in nano-USD reserved in the ledger before every attempt.
    """

    path: str
    body: dict[str, Any]
    key: str
    worst: int


@dataclass(frozen=True)
class Response:
    """One answered request: the JSON body, its cost (0 on a cache hit) and where it came from."""

    key: str
    body: dict[str, Any]
    cost_nanos: int
    estimated: bool
    cached: bool


@dataclass(frozen=True)
class Failure:
    """An attempt without a usable answer.

    Attributes:
        problem: what happened, for the log and the final error message.
        billed: whether the provider may have run (and billed) the request.
        retry_after: the server's ``Retry-After`` in seconds, if it sent one.
        final: not worth retrying (a refusal such as HTTP 400 or 401).
        refused: the endpoint said the request is invalid (a validation error).
    """

    problem: str
    billed: bool
    retry_after: float | None = None
    final: bool = False
    refused: bool = False


@dataclass
class Counters:
    """What a teacher did so far (updated under the teacher's lock).

    ``spent_nanos`` is the confirmed cost of answered requests; ``unconfirmed`` counts the
    attempts sent without a usable answer and ``unconfirmed_nanos`` their worst case, charged
    to the budget because the provider may have billed them. ``unscored`` counts the prompt
    positions scoring left masked (no distribution, or alternatives without one id each).
    """

    cache_hits: int = 0
    paid: int = 0
    retries: int = 0
    failed: int = 0
    spent_nanos: int = 0
    unconfirmed: int = 0
    unconfirmed_nanos: int = 0
    unscored: int = 0


class Layer(Protocol):
    """A part of the stack: answers a :class:`Call`, usually by asking the part below it."""

    def send(self, call: Call) -> Response | Failure:
        """Return the answer, or why this attempt got none."""
        ...
