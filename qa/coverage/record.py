"""Keep the coverage figures of a commit in the repository, for the docs' QA page.

``python -m qa.coverage record`` copies the figures of the last ``nox -s coverage`` run
(``qa/reports/coverage-summary.json``, git-ignored) into ``qa/coverage/record.json``
(committed), stamped with the commit and date. The docs site renders its QA page from that
file at build time, so the page shows the figures that were measured, never typed ones.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from qa import gates, summary
from qa.mutation.history import git_sha

RECORD = Path(__file__).resolve().parent / "record.json"


def build_record(coverage_summary: dict[str, Any], sha: str, date: str) -> dict[str, Any]:
    """Turn the gate's summary into the committed record.

    ``floors`` has one row per package and critical module (figures, floors, status);
    ``modules`` one row per measured module, sorted by name.

    >>> from qa.coverage.record import build_record
    >>> rec = build_record(
    ...     {"floors": [{"name": "kd_train", "kind": "package", "line": 91.2, "branch": 80.0,
    ...                  "floor": {"line": 90.0, "branch": 79.0}, "status": "ok"}],
    ...      "modules": {"kd_train.x": {"line": 90.0, "branch": 50.0, "statements": 10}}},
    ...     sha="abc", date="2026-11-29")
    >>> rec["floors"][0]["line_floor"], rec["modules"][0]["module"]
    (90.0, 'kd_train.x')
    """
    floors = [
        {
            "name": row["name"],
            "kind": row["kind"],
            "line": row["line"],
            "line_floor": row["floor"]["line"],
            "branch": row["branch"],
            "branch_floor": row["floor"]["branch"],
            "status": row["status"],
        }
        for row in coverage_summary["floors"]
    ]
    modules = [
        {"module": name, **figures} for name, figures in sorted(coverage_summary["modules"].items())
    ]
    return {"measured": {"sha": sha, "date": date}, "floors": floors, "modules": modules}


def record(reports: Path = gates.REPORTS, out: Path = RECORD) -> Path:
    """Write the record from ``reports/coverage-summary.json``; return its path."""
    data = json.loads((reports / "coverage-summary.json").read_text(encoding="utf-8"))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    summary.write_json(out, build_record(data, git_sha(gates.ROOT), today))
    return out
