"""Every suppression comment in scanned code is a finding until the register justifies it.

A suppression silences a gate on one line: ``# nosec`` (bandit), ``# nosemgrep`` (semgrep),
``# noqa`` on a security rule (ruff's flake8-bandit ``S`` codes, or a ``# noqa`` that names no
code at all), ``# pragma: no cover`` / ``# pragma: no branch`` (coverage's floors and
diff-cover) and ``# type: ignore`` (mypy). Each one becomes a :class:`~qa.security.findings.Finding`
whose rule is ``suppress:<the directive as written>`` (``suppress:nosec B602``,
``suppress:type: ignore[attr-defined]``), so a register entry names the exact directive, the
file and the fingerprint of the code it sits on: widening the directive (``B602`` to
``B602,B603``), moving it to other code or copying the line makes a new finding.

>>> [d for d, _ in directives("run(c, shell=True)  # nosec B602  # nosemgrep: shell-true")]
['nosec B602', 'nosemgrep: shell-true']
>>> [d for d, _ in directives("x = f()  # noqa: N812 - a conventional alias")]
[]
>>> [d for d, _ in directives("rng = random.Random(1)  # noqa: S311 - toy data")]
['noqa: S311']
>>> [d for d, _ in directives("y = g()  # type: ignore[attr-defined]  # pragma: no cover")]
['type: ignore[attr-defined]', 'pragma: no cover']
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qa.security.findings import Finding

RULE_PREFIX = "suppress:"

#: What each directive silences (the message a finding carries).
_WHAT = {
    "nosec": "silences bandit",
    "nosemgrep": "silences semgrep",
    "noqa": "silences ruff's security (S) rules",
    "pragma": "hides code from the coverage floors and diff-cover",
    "type": "silences mypy",
    "mypy": "silences mypy for the whole file",
    "pyright": "silences pyright",
}

_CODES = r"[A-Za-z]+[0-9]+(?:\s*,\s*[A-Za-z]+[0-9]+)*"
_PATTERNS = [
    re.compile(r"\bnosec\b(?:\s*:?\s*B\d{3}(?:\s*[,\s]\s*B\d{3})*)?"),
    re.compile(r"\bnosemgrep\b(?:\s*:\s*[\w.-]+(?:\s*,\s*[\w.-]+)*)?"),
    re.compile(rf"(?:\b(?:ruff|flake8)\s*:\s*)?\bnoqa\b(?:\s*:\s*{_CODES})?", re.IGNORECASE),
    re.compile(r"\bpragma\s*:?\s*no\s*(?:cover|branch)\b", re.IGNORECASE),
    re.compile(r"\btype\s*:\s*ignore\b(?:\[[^\]]*\])?"),
    re.compile(r"\bmypy\s*:\s*ignore-errors\b"),
    re.compile(r"\bpyright\s*:\s*ignore\b(?:\[[^\]]*\])?"),
]
_NOQA_CODES = re.compile(r"[A-Za-z]+[0-9]+")


def _is_security_noqa(directive: str) -> bool:
    """A ``noqa`` counts when it names no code (it silences every rule) or an ``S`` code."""
    _, _, codes = directive.lower().partition("noqa")
    found = _NOQA_CODES.findall(codes)
    return not found or any(re.fullmatch(r"s\d+", c) for c in found)


def _normal(directive: str) -> str:
    """Collapse the spacing of a directive, so re-spacing keeps its register entry."""
    text = re.sub(r"\s*,\s*", ",", " ".join(directive.split()))
    return re.sub(r"\s*:\s*", ": ", text)


def directives(comment: str) -> Iterator[tuple[str, str]]:
    """Yield (directive, what it silences) for every suppression in one comment's text."""
    hits = []
    for pattern in _PATTERNS:
        hits += [(m.start(), m.group(0)) for m in pattern.finditer(comment)]
    for _, raw in sorted(hits):
        head = raw.split(":")[0].split()[0].lower()
        kind = "noqa" if "noqa" in raw.lower() else head
        if kind == "noqa" and not _is_security_noqa(raw):
            continue
        yield _normal(raw), _WHAT.get(kind, "silences a check")


def _comments(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line, text) of every comment token of a Python file (never docstrings)."""
    text = path.read_text(encoding="utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def scan(root: Path, files: list[Path]) -> tuple[list[Finding], list[str]]:
    """Return the suppression findings of ``files`` and the files that could not be read."""
    findings, errors = [], []
    for path in files:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            comments = list(_comments(path))
        except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError) as exc:
            errors.append(f"{rel}: cannot scan for suppressions ({exc})")
            continue
        for line, comment in comments:
            for directive, what in directives(comment):
                code = lines[line - 1] if line <= len(lines) else ""
                message = f"# {directive} {what}; register it with a reason or remove it"
                findings.append(Finding(RULE_PREFIX + directive, rel, line, code, message))
    return findings, errors


CONFIG_PREFIX = "suppress-config:"
#: What the gate must always scan, where it exists (a scope that drops one fails).
REQUIRED_SCOPE = ("packages/*/src", "qa", "noxfile.py")


def _config_finding(
    root: Path, file: str, what: str, value: str, message: str, anchor: str = ""
) -> Finding:
    """A finding for one configured exemption; its code quotes the value (no '#' cut).

    Its line is the first that holds ``anchor`` (default: the quoted value), for people.
    """
    quoted = json.dumps(value)
    needle = json.dumps(anchor) if anchor else quoted
    line = 1
    try:
        lines = (root / file).read_text(encoding="utf-8").splitlines()
        line = next((i for i, t in enumerate(lines, 1) if needle in t), 1)
    except OSError:
        pass
    return Finding(CONFIG_PREFIX + what, file, line, f"{what} {quoted}", f"{quoted} {message}")


def _codes(values: Any) -> list[str]:
    return [str(v) for v in values or [] if re.fullmatch(r"S\d*", str(v))]


def config(root: Path, exclude: list[str], bandit_skips: list[str]) -> list[Finding]:
    """Findings for every exemption set in configuration rather than on a line.

    ``pyproject.toml``: ruff ignores of security (``S``) codes, globally or per file; coverage's
    ``exclude_lines`` / ``exclude_also`` / ``partial_branches`` / ``omit``; mypy's
    ``ignore_errors`` and ``disable_error_code``. ``qa/gates.toml`` ``[security]``: each
    ``exclude`` folder and each bandit test in ``bandit_skips``. Like a comment, each one
    needs a register entry that says why.
    """
    out: list[Finding] = []
    py = "pyproject.toml"
    try:
        data = tomllib.loads((root / py).read_text(encoding="utf-8"))
    except OSError:
        data = {}
    tool = data.get("tool", {})
    ruff = tool.get("ruff", {})
    lint = ruff.get("lint", {})
    for table in (ruff, lint):
        for key in ("ignore", "extend-ignore"):
            for code in _codes(table.get(key)):
                out.append(_config_finding(root, py, "ruff ignore", code, "silences ruff's S rule"))
        for key in ("per-file-ignores", "extend-per-file-ignores"):
            for glob, codes in (table.get(key) or {}).items():
                for code in _codes(codes):
                    what = f"ruff per-file-ignores {glob}"
                    msg = "silences ruff's S rule"
                    out.append(_config_finding(root, py, what, code, msg, anchor=glob))
    cov = tool.get("coverage", {})
    for table, keys in (("report", ("exclude_lines", "exclude_also", "partial_branches")),
                        ("run", ("omit",))):  # fmt: skip
        for key in keys:
            for value in cov.get(table, {}).get(key) or []:
                msg = "hides code from the coverage floors and diff-cover"
                out.append(_config_finding(root, py, f"coverage {key}", str(value), msg))
    mypy = tool.get("mypy", {})
    for table in [mypy, *(mypy.get("overrides") or [])]:
        for code in table.get("disable_error_code") or []:
            out.append(_config_finding(root, py, "mypy disable_error_code", code, "silences mypy"))
        if table.get("ignore_errors"):
            module = str(table.get("module", "*"))
            out.append(_config_finding(root, py, "mypy ignore_errors", module, "silences mypy"))
    gates = "qa/gates.toml"
    for folder in exclude:
        msg = "is never scanned by bandit, semgrep or the suppression scan"
        out.append(_config_finding(root, gates, "security exclude", folder, msg))
    for test in bandit_skips:
        out.append(_config_finding(root, gates, "bandit skip", test, "is never run by bandit"))
    return out


def missing_scope(root: Path, paths: list[str]) -> list[str]:
    """Name each part of :data:`REQUIRED_SCOPE` that exists but ``paths`` does not cover."""
    covered = [(root / p).resolve() for p in paths]
    out = []
    for pattern in REQUIRED_SCOPE:
        for found in sorted(root.glob(pattern)):
            r = found.resolve()
            if not any(r == c or r.is_relative_to(c) for c in covered):
                rel = r.relative_to(root.resolve()).as_posix()
                out.append(f"scope: {rel} is not in [security] paths of qa/gates.toml")
    return out
