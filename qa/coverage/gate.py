"""Coverage floors: per package and per critical module, from ``coverage json``.

Figures are summed over files: line % = covered lines / statements, branch % = covered
branches / branches (100 % when there is no branch). A module name covers its file, or every
file below it when it is a package.

>>> report = {"files": {"packages/kd-train/src/kd_train/losses/kl.py": {"summary": {
...     "covered_lines": 9, "num_statements": 10, "covered_branches": 3, "num_branches": 4}}}}
>>> figures(report, "kd_train.losses")
Figures(line=90.0, branch=75.0, statements=10)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qa.gates import ROOT, CoverageFloor, CoverageGates, dotted, module_path


@dataclass(frozen=True)
class Figures:
    """Line and branch coverage (percent) of a set of files."""

    line: float
    branch: float
    statements: int


@dataclass(frozen=True)
class Row:
    """One checked floor: what, its figures, its floors and the verdict."""

    kind: str  # "package" or "module"
    name: str
    line: float | None
    branch: float | None
    floor: CoverageFloor
    status: str  # "ok", "BELOW FLOOR", "MISSING", "PENDING"
    note: str = ""

    @property
    def failed(self) -> bool:
        """True when this row fails the gate."""
        return self.status in ("BELOW FLOOR", "MISSING")


def _covers(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


def figures(report: dict[str, Any], name: str) -> Figures | None:
    """Return the figures of module/package ``name``, or None if no file of it was measured."""
    sums = [0, 0, 0, 0]
    found = False
    for path, data in report["files"].items():
        module = dotted(path)
        if module is None or not _covers(module, name):
            continue
        found = True
        s = data["summary"]
        sums[0] += int(s["covered_lines"])
        sums[1] += int(s["num_statements"])
        sums[2] += int(s.get("covered_branches", 0))
        sums[3] += int(s.get("num_branches", 0))
    if not found:
        return None
    line = 100.0 * sums[0] / sums[1] if sums[1] else 100.0
    branch = 100.0 * sums[2] / sums[3] if sums[3] else 100.0
    return Figures(round(line, 2), round(branch, 2), sums[1])


def per_module(report: dict[str, Any]) -> dict[str, Figures]:
    """Return the figures of every measured file, by dotted module name."""
    out = {}
    for path in report["files"]:
        module = dotted(path)
        if module is not None:
            fig = figures({"files": {path: report["files"][path]}}, module)
            if fig is not None:
                out[module] = fig
    return dict(sorted(out.items()))


def floor_from(figure: float, margin: float) -> float:
    """The floor a measured figure sets: ``figure - margin``, rounded down to one decimal.

    The margin keeps an unrelated change from tripping a floor by a hundredth of a point
    (a test that stops reaching one branch), while a real drop still fails.

    >>> floor_from(96.74, 0.5), floor_from(100.0, 0.5), floor_from(90.0, 0.0)
    (96.2, 99.5, 90.0)
    """
    # round first: 96.74 - 0.5 is 96.23999..., which must floor to 96.2, not 96.1
    return math.floor(round((figure - margin) * 10, 6)) / 10


def raise_hint(fig: Figures, floor: CoverageFloor, margin: float = 0.0) -> str:
    """Say which floors the figures would raise (``python -m qa.coverage record`` does it).

    >>> raise_hint(Figures(93.4, 80.0, 10), CoverageFloor(line=90.0, branch=80.0), 0.5)
    'RAISE line floor to 92.9'
    """
    hints = []
    for what, figure, current in (
        ("line", fig.line, floor.line),
        ("branch", fig.branch, floor.branch),
    ):
        target = floor_from(figure, margin)
        if target > current:
            hints.append(f"{what} floor to {target}")
    return "RAISE " + ", ".join(hints) if hints else ""


def _row(
    kind: str, name: str, fig: Figures | None, floor: CoverageFloor, exists: bool, margin: float
) -> Row:
    if not exists:
        if floor.pending:
            return Row(kind, name, None, None, floor, "PENDING", "not written yet")
        return Row(kind, name, None, None, floor, "MISSING", f"no source for {name}")
    if fig is None:
        fig = Figures(0.0, 0.0, 0)
    ok = fig.line >= floor.line and fig.branch >= floor.branch
    notes = [raise_hint(fig, floor, margin)]
    if floor.pending:
        notes.append("landed: remove `pending`")
    note = "; ".join(n for n in notes if n)
    return Row(kind, name, fig.line, fig.branch, floor, "ok" if ok else "BELOW FLOOR", note)


def check(report: dict[str, Any], gates: CoverageGates, root: Path = ROOT) -> list[Row]:
    """Check every package and critical-module floor against the report."""
    rows = []
    for name, floor in sorted(gates.packages.items()):
        exists = module_path(name, root) is not None
        rows.append(_row("package", name, figures(report, name), floor, exists, gates.margin))
    for name, floor in sorted(gates.modules.items()):
        exists = module_path(name, root) is not None
        rows.append(_row("module", name, figures(report, name), floor, exists, gates.margin))
    return rows


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.2f}"


def table(rows: list[Row]) -> str:
    """Render the checked floors as a plain-text table."""
    lines = [f"{'kind':8s} {'name':32s} {'line':>7s} {'floor':>6s} {'branch':>7s} {'floor':>6s}"]
    for r in rows:
        lines.append(
            f"{r.kind:8s} {r.name:32s} {_pct(r.line)}% {r.floor.line:6.1f} "
            f"{_pct(r.branch)}% {r.floor.branch:6.1f}  {r.status}"
            + (f"  ({r.note})" if r.note else "")
        )
    return "\n".join(lines)


def summary_json(report: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """The JSON summary written to ``qa/reports/coverage-summary.json``."""
    return {
        "passed": not any(r.failed for r in rows),
        "floors": [{**asdict(r), "floor": asdict(r.floor), "failed": r.failed} for r in rows],
        "modules": {k: asdict(v) for k, v in per_module(report).items()},
    }
