"""``python -m qa all [--base REF] [--quick]``: run the four gates, print one summary table.

Each gate runs as a subprocess of the very command its nox session runs (``GATES`` below is
the one place those commands are written); a failing gate does not stop the others. The
table has one row per gate: gate, figure, floor, pass/fail. Exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from qa import summary
from qa.gates import REPORTS, ROOT


def gate_commands(base: str | None = None, quick: bool = False) -> dict[str, list[str]]:
    """The command of each gate (the nox sessions run these too)."""
    py = sys.executable
    coverage = [py, "-m", "qa.coverage", "run", *(["--base", base] if base else [])]
    mutation = [py, "-m", "qa.mutation", *(["--quick", "--base", base] if quick and base else [])]
    return {
        "coverage": coverage,
        "mutation": mutation,
        "security": [py, "-m", "qa.security", "run"],
        "docs": [py, "-m", "qa.docs", "run"],
    }


def table(rows: list[summary.Summary]) -> str:
    """The summary table, one row per gate.

    >>> print(table([summary.Summary("docs", "ok", "0 warnings", True)]))
    gate      figure                                              floor                     result
    docs      ok                                                  0 warnings                pass
    """
    head = f"{'gate':9s} {'figure':51s} {'floor':25s} result"
    body = [
        f"{r.gate:9s} {r.figure:51s} {r.floor:25s} {'pass' if r.passed else 'FAIL'}" for r in rows
    ]
    return "\n".join([head, *body])


def run_all(commands: dict[str, list[str]]) -> list[summary.Summary]:
    """Run every gate; the row of a gate whose command failed always says FAIL."""
    rows = []
    for gate, cmd in commands.items():
        (REPORTS / f"gate-{gate}.json").unlink(missing_ok=True)
        print(f"\n===== {gate}: {' '.join(cmd)}", flush=True)
        start = time.monotonic()
        rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
        took = f" ({time.monotonic() - start:.0f} s)"
        row = summary.read(gate, REPORTS)
        if row is None:
            rows.append(summary.Summary(gate, f"no summary (exit {rc}){took}", "-", False))
        else:
            rows.append(summary.Summary(gate, row.figure, row.floor, row.passed and rc == 0))
    return rows


def main(argv: list[str]) -> int:
    """Parse ``argv``; run the gates; print the table."""
    parser = argparse.ArgumentParser(prog="python -m qa", description=__doc__)
    parser.add_argument("what", choices=["all"], help="all: every gate")
    parser.add_argument("--base", help="base ref: diff coverage, floor ratchet, quick mutation")
    parser.add_argument("--quick", action="store_true", help="mutation: changed files only")
    parser.add_argument("--only", action="append", help="run only this gate (repeatable)")
    args = parser.parse_args(argv)
    commands = gate_commands(args.base, args.quick)
    if args.only:
        commands = {k: v for k, v in commands.items() if k in args.only}
    REPORTS.mkdir(parents=True, exist_ok=True)
    rows = run_all(commands)
    print("\n" + table(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
