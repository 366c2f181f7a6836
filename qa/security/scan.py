"""Run bandit and semgrep (our local rules only, never the registry) and collect findings.

semgrep lives in its own virtualenv (its pins differ from ci/constraints.txt): it is found
through ``$KD_SEMGREP`` (set by the nox sessions) or on ``PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from qa.security.findings import Finding, parse_bandit, parse_semgrep, rel_path

RULES = Path(__file__).resolve().parent / "semgrep"
RULE_TESTS = RULES / "tests"
SEMGREP_FLAGS = ("--metrics=off", "--disable-version-check")


class ToolError(Exception):
    """A scanner is missing or did not produce a report."""


def semgrep_executable() -> str:
    """Return the semgrep to run: ``$KD_SEMGREP``, else ``semgrep`` on PATH."""
    exe = os.environ.get("KD_SEMGREP") or shutil.which("semgrep")
    if not exe:
        raise ToolError(
            "semgrep not found: run `nox -s security` (it builds semgrep's own venv), "
            "or set KD_SEMGREP to a semgrep executable"
        )
    return exe


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEMGREP_SEND_METRICS": "off", "SEMGREP_ENABLE_VERSION_CHECK": "0"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=env)


def bandit(
    root: Path, paths: list[str], exclude: list[str], skips: list[str]
) -> tuple[list[Finding], set[str]]:
    """Run ``bandit -r -f json`` over ``paths``; return its findings and the files it read.

    ``--ini`` points at an empty file, so a ``.bandit`` file dropped into a scanned folder
    cannot add skips or exclusions.
    """
    cmd = [sys.executable, "-m", "bandit", "-r", "-q", "-f", "json", "--ini", os.devnull, *paths]
    if exclude:
        cmd += ["-x", ",".join(exclude)]
    if skips:
        cmd += ["-s", ",".join(skips)]
    proc = _run(cmd, root)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise ToolError(f"bandit failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    if report.get("errors"):
        raise ToolError(f"bandit could not scan: {json.dumps(report['errors'])[:2000]}")
    scanned = {rel_path(k, root) for k in report.get("metrics", {}) if k != "_totals"}
    return parse_bandit(report, root), scanned


def semgrep(
    root: Path, paths: list[str], exclude: list[str], rules: Path = RULES
) -> tuple[list[Finding], set[str]]:
    """Run semgrep with the rules in ``rules`` over ``paths``; return findings and files read."""
    cmd = [semgrep_executable(), "scan", *SEMGREP_FLAGS, "--json", "--quiet"]
    cmd += ["--config", str(rules)]
    for pattern in exclude:
        cmd += ["--exclude", pattern]
    proc = _run([*cmd, *paths], root)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise ToolError(f"semgrep failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    if report.get("errors"):
        raise ToolError(f"semgrep reported errors: {json.dumps(report['errors'])[:2000]}")
    scanned = {rel_path(k, root) for k in report.get("paths", {}).get("scanned", [])}
    return parse_semgrep(report, root), scanned


def rule_tests(rules: Path = RULES, cases: Path = RULE_TESTS) -> tuple[bool, str]:
    """Run ``semgrep --test``: every rule against its ``# ruleid:`` / ``# ok:`` cases."""
    cmd = [semgrep_executable(), *SEMGREP_FLAGS, "--test", "--quiet"]
    proc = _run([*cmd, "--config", str(rules), str(cases)], rules)
    text = "\n".join(
        line for line in (proc.stdout + proc.stderr).splitlines() if "✓" in line or "✖" in line
    )
    missing = sorted(p.stem for p in rules.glob("*.yaml") if not (cases / f"{p.stem}.py").is_file())
    if missing:
        text += f"\nrules without test cases in {cases}: {', '.join(missing)}"
    return proc.returncode == 0 and not missing, text or proc.stdout[-2000:]


def python_files(root: Path, paths: list[str], exclude: list[str]) -> list[Path]:
    """Every ``.py`` in ``paths`` (files, or folders searched below) that is not excluded."""
    skip = [(root / e).resolve() for e in exclude]
    out = []
    for p in paths:
        base = root / p
        for f in [base] if base.is_file() else sorted(base.rglob("*.py")):
            r = f.resolve()
            if not any(r.is_relative_to(s) for s in skip):
                out.append(f)
    return out
