"""The one-line summary each gate writes for ``python -m qa all``'s table.

A gate writes ``qa/reports/gate-<gate>.json`` = ``{"gate", "figure", "floor", "passed"}``
next to its detailed report; :func:`read` returns None when a gate never got that far.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qa.gates import REPORTS


@dataclass(frozen=True)
class Summary:
    """One row of the summary table."""

    gate: str
    figure: str
    floor: str
    passed: bool


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def write(summary: Summary, reports: Path = REPORTS) -> Path:
    """Write a gate's summary; return its path."""
    path = reports / f"gate-{summary.gate}.json"
    write_json(path, asdict(summary))
    return path


def read(gate: str, reports: Path = REPORTS) -> Summary | None:
    """Read a gate's summary, or None if it is missing or unreadable."""
    try:
        data = json.loads((reports / f"gate-{gate}.json").read_text(encoding="utf-8"))
        return Summary(
            str(data["gate"]), str(data["figure"]), str(data["floor"]), bool(data["passed"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
