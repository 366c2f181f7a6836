"""Keep the coverage figures of a commit in the repository, for the docs' QA page.

``python -m qa.coverage record`` copies the figures of the last ``nox -s tests`` run
(``qa/reports/coverage-summary.json``, git-ignored) into ``qa/coverage/record.json``
(committed), stamped with the commit and date. The docs site renders its QA page from that
file at build time, so the page shows the figures that were measured, never typed ones.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
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


def uncommitted_sources(root: Path = gates.ROOT) -> list[str]:
    """The packages' source files that differ from the checked-out commit (sorted)."""
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", "packages/*/src"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(line[3:].split(" -> ")[-1] for line in proc.stdout.splitlines() if line)


def record(reports: Path = gates.REPORTS, out: Path = RECORD) -> Path:
    """Write the record from ``reports/coverage-summary.json``; return its path.

    ``measured`` holds the commit (``+dirty`` when the tree had uncommitted changes), the
    date, and ``uncommitted``: the source files that differed from that commit, so the QA
    status page can tell which figures describe code that no commit holds.
    """
    data = json.loads((reports / "coverage-summary.json").read_text(encoding="utf-8"))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    rec = build_record(data, git_sha(gates.ROOT), today)
    rec["measured"]["uncommitted"] = uncommitted_sources(gates.ROOT)
    summary.write_json(out, rec)
    return out
