"""``python -m qa.coverage``: measure, report and check coverage against ``qa/gates.toml``.

* ``report [--record]``: what ``nox -s tests`` (and so ``nox -s ci``) runs right after its
  pytest run under ``--cov``: combine that run's data, write ``qa/reports/coverage.json`` and
  check the floors. The suite runs once; its coverage is what the floors are checked on.
* ``run [--base REF] [-- PYTEST_ARGS]``: the whole gate (what ``nox -s coverage`` runs):
  erase, the same fast tests as ``nox -s tests`` with ``--cov`` (xdist workers and
  subprocesses combined: ``patch = ["subprocess"]`` in pyproject.toml), JSON + HTML + XML
  under ``qa/reports/``, then the floors. With ``--base REF`` also diff coverage of the change
  (diff-cover, floor ``coverage.diff``) and the floor ratchet (no floor in gates.toml may be
  lower than at REF).
* ``check COVERAGE_JSON``: only the floors, against an existing report.
* ``ratchet REF``: only the floor ratchet against git.
* ``record`` (or ``report --record``): the only command that writes into the tree. It keeps
  the last run's figures, commit and date in ``qa/coverage/record.json`` (the docs' QA status
  page reads them) and raises each floor in ``qa/gates.toml`` to the figure minus
  ``[coverage] margin``, rounded down to one decimal, where that is higher. Floors never go
  down this way.

Everything else writes under ``qa/reports/`` (git-ignored) only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from qa import gates, summary
from qa.coverage.floors import raise_floors, targets
from qa.coverage.gate import Row, check, summary_json, table
from qa.coverage.record import record

#: What ``nox -s tests`` runs (keep the two in step): the packages' tests, their doctests,
#: the QA tools' tests and the cross-package tests, every one not marked slow.
PACKAGE_TESTS = [
    "packages/kd-train/tests",
    "packages/kd-eval/tests",
    "packages/kd-convert/tests",
    "packages/kd-train/src",
    "packages/kd-eval/src",
    "packages/kd-convert/src",
    "qa/tests",
    "tests",
]
MARKERS = "not slow"


def pytest_command(extra: list[str]) -> list[str]:
    """The pytest run whose coverage is measured."""
    paths = [p for p in PACKAGE_TESTS if (gates.ROOT / p).is_dir()]
    return [
        *(sys.executable, "-m", "pytest", *paths, "--doctest-modules", "-m", MARKERS),
        *("-p", "no:cacheprovider", "--cov", "--cov-report=", *extra),
    ]


def cmd_check(
    report_path: Path, reports: Path = gates.REPORTS, gates_file: Path = gates.GATES
) -> int:
    """Check the floors against ``report_path``; write the JSON summary; 0 when all pass."""
    report = json.loads(report_path.read_text(encoding="utf-8"))
    cov_gates = gates.coverage(gates.read(gates_file))
    rows = check(report, cov_gates)
    print(table(rows))
    print(
        f"floors: qa/gates.toml, each set at its figure minus {cov_gates.margin} points, rounded"
        " down to one decimal (`python -m qa.coverage record` raises them; nothing lowers them)"
    )
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


def cmd_record(reports: Path = gates.REPORTS, gates_file: Path = gates.GATES) -> int:
    """Keep the last run's figures in record.json and raise the floors they set; 0 on success.

    Refuses a run that failed its floors: a record is a run that passed.
    """
    data = json.loads((reports / "coverage-summary.json").read_text(encoding="utf-8"))
    if not data["passed"]:
        print("qa.coverage: not recorded: the last run is below a floor", file=sys.stderr)
        return 1
    print(f"qa.coverage: wrote {record(reports)}")
    margin = gates.coverage(gates.read(gates_file)).margin
    rows = [
        Row(r["kind"], r["name"], r["line"], r["branch"], gates.CoverageFloor(0.0, 0.0), "")
        for r in data["floors"]
    ]
    text, changes = raise_floors(gates_file.read_text(encoding="utf-8"), targets(rows, margin))
    if changes:
        summary.write_text(gates_file, text)
    for change in changes:
        print(f"qa.coverage: raised in {gates_file.name}: {change}")
    return 0


def cmd_report(record_it: bool, reports: Path = gates.REPORTS) -> int:
    """Combine the data of the pytest run just done, write coverage.json, check the floors."""
    reports.mkdir(parents=True, exist_ok=True)
    cov = [sys.executable, "-m", "coverage"]
    # "No data to combine" (1) is fine: pytest-cov has combined the workers' data already.
    _run([*cov, "combine", "--append", "-q"], ok=(0, 1))
    rc = _run([*cov, "json", "-q", "-o", str(reports / "coverage.json")])
    if rc:
        return rc
    rc = cmd_check(reports / "coverage.json", reports)
    return rc or (cmd_record(reports) if record_it else 0)


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
    _run([*cov, "combine", "--append", "-q"], ok=(0, 1))
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
    rep = sub.add_parser("report", help="combine, report and check the run just done")
    rep.add_argument("--record", action="store_true", help="then `record` (writes the tree)")
    sub.add_parser("record", help="keep the last run's figures; raise the floors they set")
    args = parser.parse_args(argv)
    if args.cmd == "record":
        return cmd_record()
    if args.cmd == "report":
        return cmd_report(args.record)
    if args.cmd == "check":
        return cmd_check(args.report)
    if args.cmd == "ratchet":
        return cmd_ratchet(args.ref)
    return cmd_run(args.base, args.pytest_args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
