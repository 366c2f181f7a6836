"""``python -m qa.security``: the security gate (what ``nox -s security`` runs).

* ``run`` (the default): semgrep ``--test`` of our rules, then bandit, semgrep and the
  suppression scan (:mod:`qa.security.suppressions`: every ``# nosec``, ``# nosemgrep``,
  security ``# noqa``, ``# pragma: no cover`` and ``# type: ignore``) over the paths in
  ``[security]`` of ``qa/gates.toml``, plus the exemptions written in configuration
  (:func:`qa.security.suppressions.config`); fails on any finding not in
  ``qa/security/accepted.toml``, a file in scope that a scanner did not read, a scope that
  leaves out a package's sources, ``qa`` or ``noxfile.py``, any register entry without a
  justification or that accepts nothing (stale), any blanket ``# nosec`` / ``# nosemgrep``
  (one that names no rule), or a rule whose tests fail.
* ``accept --rule RULE --location FILE:LINE --why TEXT``: add a finding to the register.
* ``prune``: delete the register entries that match no finding any more.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qa import gates, summary
from qa.security import register, scan, suppressions
from qa.security.findings import Finding, blanket_suppressions, rel_path, source_line


@dataclass
class Result:
    """What one run of the gate found."""

    findings: list[Finding] = field(default_factory=list)
    new: list[Finding] = field(default_factory=list)
    stale: list[register.Accepted] = field(default_factory=list)
    register_problems: list[str] = field(default_factory=list)
    blanket: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing fails the gate."""
        return not (self.new or self.stale or self.register_problems or self.blanket or self.errors)


def check(
    root: Path,
    paths: list[str],
    exclude: list[str],
    register_path: Path,
    bandit_skips: list[str] = [],  # noqa: B006 - never mutated
    run_rule_tests: bool = True,
    scanners: bool = True,
) -> Result:
    """Scan ``paths`` under ``root`` and compare the findings with the register.

    ``scanners=False`` leaves out bandit and semgrep (the suppression scan and the register
    checks still run).
    """
    res = Result()
    if run_rule_tests:
        ok, text = scan.rule_tests()
        print(text)
        if not ok:
            res.errors.append("semgrep rule tests failed (semgrep --test qa/security/semgrep)")
    files = scan.python_files(root, paths, exclude)
    tools = (
        ("bandit", lambda: scan.bandit(root, paths, exclude, bandit_skips)),
        ("semgrep", lambda: scan.semgrep(root, paths, exclude)),
    )
    for name, tool in tools if scanners else ():
        try:
            found, scanned = tool()
        except (scan.ToolError, ValueError) as exc:
            res.errors.append(f"{name}: {exc}")
            continue
        res.findings += found
        skipped = sorted({rel_path(str(f), root) for f in files} - scanned)
        if skipped:  # an ignore file (.semgrepignore, a size limit) must not shrink the scope
            res.errors.append(f"{name} did not scan {len(skipped)} file(s) in scope: {skipped}")
    found, unreadable = suppressions.scan(root, files)
    res.findings += found + suppressions.config(root, exclude, bandit_skips)
    res.errors += unreadable + suppressions.missing_scope(root, paths)
    entries = register.load(register_path)
    res.register_problems = register.problems(entries)
    res.new, res.stale = register.split(res.findings, entries)
    res.blanket = blanket_suppressions(root, files)
    return res


def report(res: Result) -> None:
    """Print the verdict with what to do about each failure."""
    print(f"security: {len(res.findings)} finding(s), {len(res.new)} new")
    for f in res.new:
        print(f"  NEW {f.describe()}")
    if res.new:
        print(
            "  fix the code, or accept with a reason:\n"
            "  python -m qa.security accept --rule RULE --location FILE:LINE --why '...'"
        )
    for p in res.register_problems:
        print(f"  REGISTER {p}")
    for b in res.blanket:
        print(f"  BLANKET SUPPRESSION (name the rule: '# nosec B603', '# nosemgrep: id') {b}")
    for e in res.errors:
        print(f"  ERROR {e}")
    for s in res.stale:
        print(f"  STALE register entry (accepts nothing): {s.rule} {s.file} {s.fingerprint}")
    if res.stale:
        print("  the code it accepted is gone or changed: python -m qa.security prune")
    print("security: " + ("ok" if res.passed else "FAILED"))


def cmd_run() -> int:
    """The whole gate over the repository."""
    sec = gates.security(gates.read())
    res = check(
        gates.ROOT, list(sec.paths), list(sec.exclude), register.REGISTER, list(sec.bandit_skips)
    )
    report(res)
    gates.REPORTS.mkdir(parents=True, exist_ok=True)
    (gates.REPORTS / "security.json").write_text(
        json.dumps(
            {
                "passed": res.passed,
                "findings": [{**f.__dict__, "fingerprint": f.fingerprint} for f in res.findings],
                "new": [f.describe() for f in res.new],
                "stale": [f"{s.rule} {s.file} {s.fingerprint}" for s in res.stale],
                "register_problems": res.register_problems,
                "blanket": res.blanket,
                "errors": res.errors,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    figure = f"{len(res.new)} new / {len(res.findings)} findings"
    summary.write(summary.Summary("security", figure, "0 new", res.passed))
    return 0 if res.passed else 1


def cmd_accept(rule: str, location: str, why: str, root: Path = gates.ROOT) -> int:
    """Register the finding of ``rule`` at ``FILE:LINE`` with its justification."""
    file, _, line = location.rpartition(":")
    if not file or not line.isdigit():
        print("qa.security: --location must be FILE:LINE", file=sys.stderr)
        return 2
    if rule.startswith(suppressions.CONFIG_PREFIX):
        return _accept_config(rule, file, int(line), why, root)
    code = source_line(root, file, int(line))
    if not code:
        print(f"qa.security: {location} is not a line of a file under {root}", file=sys.stderr)
        return 2
    if ":" not in rule:
        print(
            "qa.security: --rule is 'bandit:BXXX', 'semgrep:<rule-id>' or 'suppress:<directive>'",
            file=sys.stderr,
        )
        return 2
    if rule.startswith(suppressions.RULE_PREFIX) and rule.removeprefix(
        suppressions.RULE_PREFIX
    ) not in [d for d, _ in suppressions.directives(code)]:
        print(f"qa.security: {location} has no '# {rule.split(':', 1)[1]}'", file=sys.stderr)
        return 2
    finding = Finding(rule, Path(file).as_posix(), int(line), code, "")
    try:
        register.accept(finding, why)
    except ValueError as exc:
        print(f"qa.security: {exc}", file=sys.stderr)
        return 2
    print(f"accepted {rule} {file} ({finding.fingerprint})")
    return 0


def _accept_config(rule: str, file: str, line: int, why: str, root: Path) -> int:
    """Register every configured exemption of ``rule`` on ``file:line``.

    One line may hold several (``"S105", "S106"``): each gets an entry with the same reason.
    """
    sec = gates.security(gates.read())
    found = [
        f
        for f in suppressions.config(root, list(sec.exclude), list(sec.bandit_skips))
        if (f.rule, f.file, f.line) == (rule, file, line)
    ]
    if not found:
        print(f"qa.security: no '{rule}' exemption at {file}:{line}", file=sys.stderr)
        return 2
    for f in found:
        try:
            register.accept(f, why)
        except ValueError as exc:
            print(f"qa.security: {exc}", file=sys.stderr)
            return 2
        print(f"accepted {f.rule} {f.code} ({f.fingerprint})")
    return 0


def cmd_prune() -> int:
    """Delete stale register entries (those matching no current finding)."""
    sec = gates.security(gates.read())
    res = check(
        gates.ROOT,
        list(sec.paths),
        list(sec.exclude),
        register.REGISTER,
        list(sec.bandit_skips),
        run_rule_tests=False,
    )
    if res.errors:
        report(res)
        return 1
    entries = register.load()
    for e in res.stale:
        entries.remove(e)
    register.rewrite(entries)
    n = len(res.stale)
    print(f"pruned {n} stale entr{'y' if n == 1 else 'ies'}")
    return 0


def main(argv: list[str]) -> int:
    """Parse ``argv`` and run a subcommand (``run`` when none is given)."""
    parser = argparse.ArgumentParser(prog="python -m qa.security", description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("run", help="the whole gate (default)")
    acc = sub.add_parser("accept", help="add a finding to qa/security/accepted.toml")
    acc.add_argument(
        "--rule",
        required=True,
        help="bandit:B603, semgrep:<rule-id> or suppress:<directive> ('suppress:nosec B602')",
    )
    acc.add_argument("--location", required=True, help="FILE:LINE, FILE relative to the repo")
    acc.add_argument("--why", required=True, help="the justification, in a full sentence")
    sub.add_parser("prune", help="delete register entries that match nothing any more")
    args = parser.parse_args(argv)
    if args.cmd == "prune":
        return cmd_prune()
    if args.cmd == "accept":
        return cmd_accept(args.rule, args.location, args.why)
    return cmd_run()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
