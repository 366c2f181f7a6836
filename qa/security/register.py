"""``qa/security/accepted.toml``: every accepted finding, each with a written justification.

An entry::

    [[accepted]]
    rule = "bandit:B603"
    file = "qa/security/scan.py"
    fingerprint = "3f9a0c1d2e4b"   # qa.security.findings.Finding.fingerprint
    code = "proc = subprocess.run(cmd, ...)"   # for people; not matched
    why = "Runs our own argument list, never a shell; the inputs are paths we build."

An entry accepts one finding with the same rule, file and fingerprint: a line repeated in
one file needs one entry per copy, so copying an accepted line makes a new finding. An entry
that accepts nothing is stale and fails the gate (``python -m qa.security prune`` drops it), so
it cannot wait to cover a line written later.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from qa.security.findings import Finding

REGISTER = Path(__file__).resolve().parent / "accepted.toml"
#: A justification shorter than this is not one ("ok", "fine", "false positive").
MIN_WHY = 20


@dataclass(frozen=True)
class Accepted:
    """One register entry."""

    rule: str
    file: str
    fingerprint: str
    code: str
    why: str

    @property
    def key(self) -> tuple[str, str, str]:
        """The (rule, file, fingerprint) a finding must have to be accepted by this entry."""
        return (self.rule, self.file, self.fingerprint)


def load(path: Path = REGISTER) -> list[Accepted]:
    """Read the register (an absent file is an empty register)."""
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return [
        Accepted(
            rule=str(e.get("rule", "")),
            file=str(e.get("file", "")),
            fingerprint=str(e.get("fingerprint", "")),
            code=str(e.get("code", "")),
            why=str(e.get("why", "")).strip(),
        )
        for e in data.get("accepted", [])
    ]


def problems(entries: list[Accepted]) -> list[str]:
    """Name every entry that lacks a field or a real justification."""
    out = []
    for i, e in enumerate(entries, 1):
        where = f"accepted.toml entry {i} ({e.rule} {e.file} {e.fingerprint})"
        if not (e.rule and e.file and e.fingerprint):
            out.append(f"{where}: rule, file and fingerprint are all required")
        if len(e.why) < MIN_WHY:
            out.append(f"{where}: no justification (`why`, at least {MIN_WHY} characters)")
    return out


def split(findings: list[Finding], entries: list[Accepted]) -> tuple[list[Finding], list[Accepted]]:
    """Return (findings no entry accepts, entries that accept no finding).

    Each entry accepts one finding of its key (rule, file, fingerprint):

    >>> f = Finding("bandit:B311", "a.py", 3, "random.random()", "")
    >>> e = Accepted(f.rule, f.file, f.fingerprint, "", "a reason long enough here")
    >>> new, stale = split([f, f], [e])
    >>> len(new), stale
    (1, [])
    >>> split([], [e, e])[1] == [e, e]
    True
    """
    left = Counter(e.key for e in entries)
    new = []
    for f in findings:
        if left[f.key] > 0:
            left[f.key] -= 1
        else:
            new.append(f)
    stale = []
    for e in reversed(entries):
        if left[e.key] > 0:
            left[e.key] -= 1
            stale.append(e)
    return new, stale[::-1]


def entry_text(finding: Finding, why: str) -> str:
    """The TOML of a new register entry (strings JSON-escaped: valid TOML basic strings)."""
    return (
        "\n[[accepted]]\n"
        f"rule = {json.dumps(finding.rule)}\n"
        f"file = {json.dumps(finding.file)}\n"
        f"fingerprint = {json.dumps(finding.fingerprint)}\n"
        f"code = {json.dumps(' '.join(finding.code.split()))}\n"
        f"why = {json.dumps(' '.join(why.split()))}\n"
    )


def rewrite(entries: list[Accepted], path: Path = REGISTER) -> None:
    """Write ``entries`` back to the register, keeping its leading comment block."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    header = "".join(
        line
        for line in lines[
            : next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
        ]
    )
    body = "".join(
        entry_text(Finding(e.rule, e.file, 0, e.code, ""), e.why).replace(
            f"fingerprint = {json.dumps(Finding(e.rule, e.file, 0, e.code, '').fingerprint)}",
            f"fingerprint = {json.dumps(e.fingerprint)}",
        )
        for e in entries
    )
    path.write_text(header + body, encoding="utf-8")


def accept(finding: Finding, why: str, path: Path = REGISTER) -> None:
    """Append an entry for ``finding`` to the register; refuse an empty justification."""
    if len(why.strip()) < MIN_WHY:
        raise ValueError(f"a justification of at least {MIN_WHY} characters is required")
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(existing + entry_text(finding, why), encoding="utf-8")
