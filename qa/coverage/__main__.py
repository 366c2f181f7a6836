"""``python -m qa.coverage``: measure, report and check coverage against ``qa/gates.toml``.

* ``run [--base REF] [-- PYTEST_ARGS]``: the whole gate (what ``nox -s coverage`` runs):
  erase, pytest of the three packages' tests + integration tests with ``--cov`` (xdist workers
  and subprocesses combined: ``patch = ["subprocess"]`` in pyproject.toml), ``coverage
  combine``, JSON + HTML + XML under ``qa/reports/``, then ``check``. With ``--base REF``
  also diff coverage of the change (diff-cover, floor ``coverage.diff``) and the floor
  ratchet (no floor in gates.toml may be lower than at REF).
* ``check COVERAGE_JSON``: only the floors, against an existing report.
* ``ratchet REF``: only the floor ratchet.
* ``record``: copy the last run's figures into ``qa/coverage/record.json`` (committed; the
  docs' QA page is rendered from it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from qa import gates, summary
from qa.coverage.gate import check, summary_json, table
from qa.coverage.record import record

PACKAGE_TESTS = [
    "packages/kd-train/tests",
    "packages/kd-eval/tests",
    "packages/kd-convert/tests",
    "tests/integration",
]
MARKERS = "not slow and not e2e"


def pytest_command(extra: list[str]) -> list[str]:
    """The pytest run whose coverage is measured."""
    paths = [p for p in PACKAGE_TESTS if (gates.ROOT / p).is_dir()]
    return [sys.executable, "-m", "pytest", *paths, "-m", MARKERS, "--cov", "--cov-report=", *extra]


def cmd_check(
    report_path: Path, reports: Path = gates.REPORTS, gates_file: Path = gates.GATES
) -> int:
    """Check the floors against ``report_path``; write the JSON summary; 0 when all pass."""
    report = json.loads(report_path.read_text(encoding="utf-8"))
    rows = check(report, gates.coverage(gates.read(gates_file)))
    print(table(rows))
    data = summary_json(report, rows)
    summary.write_json(reports / "coverage-summary.json", data)
    kd_train = next((r for r in rows if r.name == "kd_train"), None)
    figure = (
        "n/a"
        if kd_train is None or kd_train.line is None
        else (f"kd_train {kd_train.line:.1f}% line / {kd_train.branch:.1f}% branch")
    )
    floor = (
        "n/a"
        if kd_train is None
        else (f"{kd_train.floor.line:.0f} / {kd_train.floor.branch:.0f} (+ {len(rows) - 1} more)")
    )
    failed = [r.name for r in rows if r.failed]
    summary.write(summary.Summary("coverage", figure, floor, not failed), reports)
    if failed:
        print(f"qa.coverage: below floor or missing: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_ratchet(ref: str) -> int:
    """Fail when a floor in gates.toml is lower than at git ``ref``."""
    old = gates.at_ref(ref)
    if old is None:
        print(f"qa.coverage: cannot read qa/gates.toml at {ref!r}", file=sys.stderr)
        return 1
    lowered = gates.lowered_floors(old, gates.read())
    for item in lowered:
        print(f"qa.coverage: floor lowered (floors may only rise): {item}", file=sys.stderr)
    return 1 if lowered else 0


def _run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> int:
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=gates.ROOT, check=False).returncode
    return 0 if rc in ok else rc


def cmd_run(base: str | None, extra: list[str]) -> int:
    """The whole gate; returns non-zero if any step failed (later steps still run)."""
    reports = gates.REPORTS
    reports.mkdir(parents=True, exist_ok=True)
    os.environ["COVERAGE_PROCESS_START"] = str(gates.ROOT / "pyproject.toml")
    cov = [sys.executable, "-m", "coverage"]
    _run([*cov, "erase"])
    tests_rc = _run(pytest_command(extra))
    # "No data to combine" (1) is fine: pytest-cov may already have combined everything.
    _run([*cov, "combine"], ok=(0, 1))
    rcs = [tests_rc]
    rcs.append(_run([*cov, "json", "-q", "-o", str(reports / "coverage.json")]))
    rcs.append(_run([*cov, "html", "-q", "-d", str(reports / "coverage-html")]))
    rcs.append(_run([*cov, "xml", "-q", "-o", str(reports / "coverage.xml")]))
    rcs.append(cmd_check(reports / "coverage.json"))
    if base:
        floor = gates.coverage(gates.read()).diff
        rcs.append(
            _run(
                [
                    sys.executable,
                    "-m",
                    "diff_cover.diff_cover_tool",
                    str(reports / "coverage.xml"),
                    f"--compare-branch={base}",
                    f"--fail-under={floor}",
                    f"--format=html:{reports / 'diff-coverage.html'}",
                ]
            )
        )
        rcs.append(cmd_ratchet(base))
    return 1 if any(rcs) else 0


def main(argv: list[str]) -> int:
    """Parse ``argv`` and run a subcommand."""
    parser = argparse.ArgumentParser(prog="python -m qa.coverage", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="measure, report, check (what nox -s coverage runs)")
    run.add_argument("--base", help="git ref of the base branch: diff coverage + floor ratchet")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    chk = sub.add_parser("check", help="check the floors against a coverage JSON report")
    chk.add_argument("report", type=Path)
    rat = sub.add_parser("ratchet", help="fail when a floor is lower than at REF")
    rat.add_argument("ref")
    sub.add_parser("record", help="keep the last run's figures in qa/coverage/record.json")
    args = parser.parse_args(argv)
    if args.cmd == "record":
        print(f"qa.coverage: wrote {record().relative_to(gates.ROOT)}")
        return 0
    if args.cmd == "check":
        return cmd_check(args.report)
    if args.cmd == "ratchet":
        return cmd_ratchet(args.ref)
    return cmd_run(args.base, args.pytest_args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
