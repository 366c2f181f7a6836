"""The one-line summary each gate writes, and the table of them (``python -m qa.summary``).

A gate writes ``qa/reports/gate-<gate>.json`` = ``{"gate", "figure", "floor", "passed"}``
next to its detailed report; :func:`read` returns None when a gate never got that far.
``python -m qa.summary`` runs nothing: it prints one row per gate (gate, figure, floor,
pass/FAIL) from those files, a missing one as FAIL, and exits 1 if any row failed. The nox
session ``qa`` queues the four gates' sessions and then ``summary``, which prints it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qa.gates import REPORTS

#: The gates, in the order of the table (each is the nox session of the same name).
GATES = ("coverage", "mutation", "security", "docs")


@dataclass(frozen=True)
class Summary:
    """One row of the summary table."""

    gate: str
    figure: str
    floor: str
    passed: bool


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: a temp file beside ``path``, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


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


def rows(gates: tuple[str, ...] = GATES, reports: Path = REPORTS) -> list[Summary]:
    """One row per gate; a gate without a readable summary did not finish, so it failed."""
    missing = "no summary: the gate did not finish"
    return [read(gate, reports) or Summary(gate, missing, "-", False) for gate in gates]


def table(rows: list[Summary]) -> str:
    """The summary table, one row per gate.

    >>> print(table([Summary("docs", "ok", "0 warnings", True)]))
    gate      figure                                              floor                     result
    docs      ok                                                  0 warnings                pass
    """
    head = f"{'gate':9s} {'figure':51s} {'floor':25s} result"
    body = [
        f"{r.gate:9s} {r.figure:51s} {r.floor:25s} {'pass' if r.passed else 'FAIL'}" for r in rows
    ]
    return "\n".join([head, *body])


def verdict(rows: list[Summary]) -> str:
    """The line after the table: one overall pass or FAIL, naming the gates that failed.

    >>> verdict([Summary("docs", "ok", "0 warnings", True), Summary("coverage", "", "", True)])
    'verdict: pass (2 of 2 gates passed)'
    >>> verdict([Summary("docs", "ok", "0 warnings", True), Summary("mutation", "", "", False)])
    'verdict: FAIL (1 of 2 gates passed; failed: mutation)'
    """
    failed = [r.gate for r in rows if not r.passed]
    counts = f"{len(rows) - len(failed)} of {len(rows)} gates passed"
    return (
        f"verdict: FAIL ({counts}; failed: {', '.join(failed)})"
        if failed
        else f"verdict: pass ({counts})"
    )


def main(argv: list[str], reports: Path = REPORTS) -> int:
    """Print the table of the gates named in ``argv`` (default: all four), then the verdict.

    Returns 1 if a gate failed (or wrote no summary), 0 otherwise.
    """
    found = rows(tuple(argv) or GATES, reports)
    print(table(found))
    print(verdict(found))
    return 0 if all(r.passed for r in found) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
