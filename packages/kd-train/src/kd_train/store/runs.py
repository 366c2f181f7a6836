"""The run registry: one row per command run, with its configuration (never secrets)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import sqlalchemy
from sqlalchemy import select, update

from kd_train.store.schema import runs


class RunRegistry:
    """Record runs in the ``runs`` table.

    >>> import tempfile, pathlib
    >>> from kd_train.store import open_store
    >>> store = open_store(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 's.sqlite'}")
    >>> run_id = store.runs.start("generate", {"model": "m"})
    >>> store.runs.finish(run_id, "done")
    >>> store.runs.get(run_id)["status"]
    'done'
    >>> store.close()
    """

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self._engine = engine

    def start(self, command: str, config: dict[str, Any]) -> str:
        """Register a run of ``command`` with ``config`` (JSON, no secrets); return its id."""
        run_id = str(uuid.uuid4())
        with self._engine.begin() as conn:
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    command=command,
                    config=json.dumps(config, sort_keys=True, default=str),
                    status="running",
                    started_at=time.time(),
                )
            )
        return run_id

    def finish(self, run_id: str, status: str) -> None:
        """Mark run ``run_id`` finished with ``status`` (e.g. ``done``, ``budget``, ``failed``)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=status, finished_at=time.time())
            )

    def get(self, run_id: str) -> dict[str, Any]:
        """Return the row of run ``run_id`` as a dict (``config`` decoded)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one()
        out = dict(row)
        out["config"] = json.loads(out["config"])
        return out
