"""The response cache in front of every attempt: a hit is returned at no cost.

The key is the SHA-256 of the model and the request (:func:`~kd_train.store.cache.cache_key`).
It is looked up before every attempt, retries included: another worker may have paid for
the answer while ours timed out. Answers enter the cache in the budget's settle transaction
(:class:`~kd_train.teachers.http.budget.Budget`), together with their charge.
"""

from __future__ import annotations

from kd_train.store import Store
from kd_train.teachers.http.exchange import Call, Count, Failure, Layer, Response


class ResponseCache:
    """Answer from ``store``'s cache when it holds the call's key, else ask ``inner``.

    Without a store there is no cache: every call goes to ``inner``.
    """

    def __init__(self, inner: Layer, store: Store | None, count: Count) -> None:
        self._inner = inner
        self._store = store
        self._count = count

    def send(self, call: Call) -> Response | Failure:
        """The cached answer to ``call`` (cost 0, ``cached=True``), or ``inner``'s."""
        if self._store is not None:
            hit = self._store.cache.get(call.key)
            if hit is not None:
                self._count(cache_hits=1)
                return Response(call.key, hit.body, 0, hit.estimated, cached=True)
        return self._inner.send(call)
