"""The mutation history kept in the repository: ``qa/mutation/history.jsonl``.

One JSON object per line and per module run: date, git SHA, module, score, counts, mutatest
and Python versions, seed and sample size. Lines are only appended, so ``git log -p`` of the
file shows how every score moved.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HISTORY = Path(__file__).resolve().parent / "history.jsonl"


def git_sha(root: Path) -> str:
    """The checked-out commit (``+dirty`` when the tree has uncommitted changes)."""
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (sha or "unknown") + ("+dirty" if dirty else "")


def entry(module: str, result: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Build one history line from a parsed report (``Report.as_dict()``) and run metadata."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "module": module,
        "score": result["score"],
        "counts": result["counts"],
        "total": result["total"],
        **meta,
    }


def append(line: dict[str, Any], path: Path = HISTORY) -> None:
    """Append one entry to the history file."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")


def latest(path: Path = HISTORY) -> dict[str, dict[str, Any]]:
    """The last entry of each module."""
    out: dict[str, dict[str, Any]] = {}
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                item = json.loads(raw)
                out[str(item["module"])] = item
    return out
