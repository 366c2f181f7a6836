"""Security findings from bandit and semgrep, with fingerprints that survive unrelated edits.

A finding's fingerprint is the rule id, the file and a hash of its code line with whitespace
collapsed, not its line number: adding a line above it does not change it.

>>> a = Finding("bandit:B602", "qa/x.py", 3, "subprocess.run(c,  shell=True)", "shell")
>>> b = Finding("bandit:B602", "qa/x.py", 90, "    subprocess.run(c, shell=True)", "shell")
>>> a.fingerprint == b.fingerprint
True
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A bandit suppression must name its test ids (B603), a semgrep one its rule id.
BLANKET_NOSEC = re.compile(r"#\s*nosec\b(?!\s*:?\s*B\d{3})")
BLANKET_NOSEMGREP = re.compile(r"#\s*nosemgrep\b(?!\s*:\s*[\w.-]+)")


def normalise(code: str) -> str:
    """Drop a trailing comment and collapse whitespace (the code a fingerprint hashes).

    Re-indenting, re-spacing or editing the comment of a line keeps its fingerprint.

    >>> normalise("    rng = random.Random(seed)  # noqa: S311 - toy data")
    'rng = random.Random(seed)'
    >>> normalise("x = '# not a comment'")
    "x = '# not a comment'"
    """
    cut = len(code)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code.strip()).readline):
            if tok.type == tokenize.COMMENT:
                cut = tok.start[1]
                break
    except (tokenize.TokenError, SyntaxError):
        pass  # an unfinished line ("run(") still yields its tokens up to the end
    return " ".join(code.strip()[:cut].split())


@dataclass(frozen=True)
class Finding:
    """One finding: ``rule`` is ``bandit:B603`` or ``semgrep:<rule-id>``."""

    rule: str
    file: str
    line: int
    code: str
    message: str

    @property
    def fingerprint(self) -> str:
        """12 hex digits of SHA-256 over the normalised code line."""
        return hashlib.sha256(normalise(self.code).encode()).hexdigest()[:12]

    @property
    def key(self) -> tuple[str, str, str]:
        """What the register matches on: (rule, file, fingerprint)."""
        return (self.rule, self.file, self.fingerprint)

    def describe(self) -> str:
        """One line for people: where, which rule, what."""
        return f"{self.file}:{self.line}: [{self.rule}] {self.message} ({self.fingerprint})"


def rel_path(path: str, root: Path) -> str:
    """``path`` relative to ``root`` (as given when it is not below it), POSIX style."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(root)
        except ValueError:
            return p.as_posix()
    return p.as_posix()


def source_line(root: Path, file: str, line: int) -> str:
    """Return line ``line`` (1-based) of ``root/file``, or "" if it does not exist."""
    try:
        lines = (root / file).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    return lines[line - 1] if 0 < line <= len(lines) else ""


def parse_bandit(report: dict[str, Any], root: Path) -> list[Finding]:
    """Turn ``bandit -f json`` output into findings (code read back from the file)."""
    out = []
    for r in report.get("results", []):
        file = rel_path(str(r["filename"]), root)
        line = int(r["line_number"])
        code = source_line(root, file, line)
        out.append(Finding(f"bandit:{r['test_id']}", file, line, code, str(r["issue_text"])))
    return out


def parse_semgrep(report: dict[str, Any], root: Path) -> list[Finding]:
    """Turn ``semgrep --json`` output into findings; rule ids lose their folder prefix."""
    out = []
    for r in report.get("results", []):
        file = rel_path(str(r["path"]), root)
        line = int(r["start"]["line"])
        rule = str(r["check_id"]).rsplit(".", 1)[-1]
        code = source_line(root, file, line)
        message = " ".join(str(r.get("extra", {}).get("message", "")).split())
        out.append(Finding(f"semgrep:{rule}", file, line, code, message))
    return out


def blanket_suppressions(root: Path, files: list[Path]) -> list[str]:
    """Name every ``# nosec`` / ``# nosemgrep`` that does not say which rule it silences."""
    out = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError):
            continue
        for tok in tokens:  # comments only: docstrings may quote suppression syntax
            if tok.type == tokenize.COMMENT and (
                BLANKET_NOSEC.search(tok.string) or BLANKET_NOSEMGREP.search(tok.string)
            ):
                out.append(f"{rel_path(str(path), root)}:{tok.start[0]}: {tok.string}")
    return out


def dumps(findings: list[Finding]) -> str:
    """Findings as JSON (for ``qa/reports/security.json``)."""
    return json.dumps(
        [{**f.__dict__, "fingerprint": f.fingerprint} for f in findings], indent=2, sort_keys=True
    )
