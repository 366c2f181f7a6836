"""The response cache index: responses keyed by the SHA-256 of model + request.

The key covers everything that decides the answer (the model name and the exact request
body, serialised canonically), and nothing else: no headers, so no API key. Two requests
with the same key get the same response from the cache, for free.

>>> from kd_train.store.cache import cache_key
>>> k = cache_key("m", {"prompt": "hi", "max_tokens": 4})
>>> k == cache_key("m", {"max_tokens": 4, "prompt": "hi"}), len(k)
(True, 64)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from sqlalchemy import func, select

from kd_train.store.schema import responses


def cache_key(model: str, request: dict[str, Any]) -> str:
    """Return the hex SHA-256 of ``model`` and ``request`` (canonical JSON, sorted keys)."""
    canonical = json.dumps(
        {"model": model, "request": request}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    """A response from the cache: the endpoint's JSON body and what it cost when paid for."""

    key: str
    body: dict[str, Any]
    cost_nanos: int
    estimated: bool


class ResponseCache:
    """Read access to the ``responses`` table (entries are written by the ledger's settle).

    >>> import tempfile, pathlib
    >>> from kd_train.store import open_store
    >>> store = open_store(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 's.sqlite'}")
    >>> store.cache.get("0" * 64) is None
    True
    >>> store.close()
    """

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self._engine = engine

    def get(self, key: str) -> CachedResponse | None:
        """Return the cached response with this key, or ``None``."""
        query = select(responses.c.response, responses.c.cost_nanos, responses.c.estimated).where(
            responses.c.key == key
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return CachedResponse(key, json.loads(row.response), row.cost_nanos, bool(row.estimated))

    def __len__(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(responses)).scalar_one())
