"""The coverage part of the docs' QA status page: floors, the latest record, and its age.

The floors come from ``qa/gates.toml`` (what the gate enforces now) and the figures from
``qa/coverage/record.json`` (the latest recorded run, ``python -m qa.coverage record``); the
page shows the commit and date of each. A row is **stale** when its code changed after the
run that measured it: a commit after the record's commit touches the package or module's
source, or the record itself was measured on uncommitted changes (``+dirty``) or on a commit
this clone does not have. :func:`render` writes the page's markdown; the docs build calls it
(``docs/_ext/kd_qa_status.py``), so the page always describes the commit it is built from.

>>> rows = [Row("kd_train", "package", 96.7, 96.2, 94.1, 93.6, "ok", "")]
>>> print(table(rows).splitlines()[2])
| kd_train | package | 96.70 | 96.2 | 94.10 | 93.6 | ok | |
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa import gates

RECORD = gates.ROOT / "qa" / "coverage" / "record.json"


@dataclass(frozen=True)
class Stamp:
    """A commit (short) and its date, or why there is none."""

    sha: str
    date: str
    note: str = ""


@dataclass(frozen=True)
class Row:
    """One package or critical module: recorded figures against today's floors."""

    name: str
    kind: str
    line: float | None
    line_floor: float
    branch: float | None
    branch_floor: float
    status: str  # "ok", "BELOW FLOOR", "not measured"
    stale: str  # why the figure is older than the code, or ""


def _git(root: Path, *args: str) -> str | None:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def last_change(path: Path, root: Path = gates.ROOT) -> Stamp:
    """The last commit that touched ``path`` (``uncommitted changes`` noted when it has some)."""
    rel = str(path.relative_to(root)) if path.is_absolute() else str(path)
    found = _git(root, "log", "-1", "--format=%h %cs", "--", rel) or ""
    sha, _, date = found.partition(" ")
    dirty = _git(root, "status", "--porcelain", "--", rel)
    return Stamp(sha or "unknown", date or "unknown", "uncommitted changes" if dirty else "")


def _figures(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in record.get("floors", [])}


def stale_reason(
    name: str, sha: str, uncommitted: list[str] | None = None, root: Path = gates.ROOT
) -> str:
    """Why the figures recorded at ``sha`` are older than the code of ``name`` ("" if not).

    ``uncommitted``: the source files that differed from ``sha`` when it was measured (None
    for an old record that does not say: then any ``+dirty`` record is stale).
    """
    source = gates.module_path(name, root)
    if source is None:
        return "no source"
    rel = str(source.relative_to(root))
    sha, dirty = sha.removesuffix("+dirty"), sha.endswith("+dirty")
    if dirty and uncommitted is None:
        return "measured on uncommitted changes"
    changed = [p for p in uncommitted or [] if p == rel or p.startswith(rel + "/")]
    if changed:
        return f"measured with uncommitted changes to {changed[0]}" + (
            f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        )
    if _git(root, "cat-file", "-e", f"{sha}^{{commit}}") is None:
        return f"record commit {sha[:12]} is not in this clone"
    count = _git(root, "rev-list", "--count", f"{sha}..HEAD", "--", rel)
    if count and int(count) > 0:
        return f"{count} commit(s) since the record touch {rel}"
    if _git(root, "status", "--porcelain", "--", rel):
        return f"uncommitted changes in {rel}"
    return ""


def rows(record: dict[str, Any], cov: gates.CoverageGates, root: Path = gates.ROOT) -> list[Row]:
    """One row per floor of ``qa/gates.toml``, with the record's figures for it."""
    figures = _figures(record)
    sha = str(record.get("measured", {}).get("sha", "unknown"))
    uncommitted = record.get("measured", {}).get("uncommitted")
    out = []
    floors = [("package", n, f) for n, f in sorted(cov.packages.items())]
    floors += [("module", n, f) for n, f in sorted(cov.modules.items())]
    for kind, name, floor in floors:
        fig = figures.get(name, {})
        line, branch = fig.get("line"), fig.get("branch")
        if line is None or branch is None:
            status = "not measured"
        elif line >= floor.line and branch >= floor.branch:
            status = "ok"
        else:
            status = "BELOW FLOOR"
        stale = stale_reason(name, sha, uncommitted, root)
        out.append(Row(name, kind, line, floor.line, branch, floor.branch, status, stale))
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(found: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| name | kind | line % | line floor | branch % | branch floor | status | stale |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [
        f"| {r.name} | {r.kind} | {_pct(r.line)} | {r.line_floor} | {_pct(r.branch)} "
        f"| {r.branch_floor} | {r.status} | {r.stale} |".replace("|  |", "| |")
        for r in found
    ]
    return "\n".join(lines)


def render(
    root: Path = gates.ROOT, record_path: Path = RECORD, gates_file: Path = gates.GATES
) -> str:
    """The markdown of the coverage section of the QA status page."""
    record = json.loads(record_path.read_text(encoding="utf-8"))
    cov = gates.coverage(gates.read(gates_file))
    found = rows(record, cov, root)
    measured = record.get("measured", {})
    floors = last_change(gates_file, root)
    head = _git(root, "log", "-1", "--format=%h %cs") or "unknown unknown"
    out = [
        f"- Figures: the run recorded in `qa/coverage/record.json`, measured on commit "
        f"`{str(measured.get('sha', 'unknown'))[:12]}` on {measured.get('date', 'unknown')}.",
        f"- Floors: `qa/gates.toml` as of commit `{floors.sha}` ({floors.date})"
        + (f", with {floors.note}" if floors.note else "")
        + f"; each floor is a recorded figure minus {cov.margin} points, rounded down to one"
        " decimal.",
        f"- This page: built from commit `{head.split()[0]}` ({head.split()[-1]}).",
        "",
    ]
    stale = [r for r in found if r.stale]
    if stale:
        out += [
            "```{warning}",
            f"The coverage record is older than the code it describes for {len(stale)} of "
            f"{len(found)} rows (see the stale column): run `nox -s tests`, then "
            "`python -m qa.coverage record`.",
            "```",
            "",
        ]
    below = [r.name for r in found if r.status == "BELOW FLOOR"]
    if below:
        out += [
            "```{warning}",
            f"Recorded figures below today's floors: {', '.join(below)}.",
            "```",
            "",
        ]
    out.append(table(found))
    return "\n".join(out) + "\n"
