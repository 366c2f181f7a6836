"""The floor ratchet: raise the coverage floors in ``qa/gates.toml`` to what a run measured.

Only ``python -m qa.coverage record`` calls it (a routine run never edits the tree). Each
floor becomes :func:`~qa.coverage.gate.floor_from` of its figure (the figure minus
``[coverage] margin``, rounded down to one decimal) when that is higher; a floor never goes
down here. The file is edited line by line, so its comments stay where they are.

>>> text = "[coverage.packages.kd_train]" + chr(10) + "line = 90.0  # why" + chr(10)
>>> new, changes = raise_floors(text, {("kd_train", "line"): 92.3, ("kd_train", "branch"): 79.0})
>>> print(new, end="")
[coverage.packages.kd_train]
line = 92.3  # why
>>> changes
['coverage kd_train line: 90.0 -> 92.3']
"""

from __future__ import annotations

import re

from qa.coverage.gate import Row, floor_from

HEADER = re.compile(r"^\[(?P<name>[^\]]+)\]\s*(#.*)?$")
FLOOR = re.compile(r"^(?P<key>line|branch)(?P<eq>\s*=\s*)(?P<value>[0-9.]+)(?P<rest>.*)$")


def _section(header: str) -> str | None:
    """The package or module a ``[coverage.packages.X]`` / ``[coverage.modules."X"]`` names."""
    for prefix in ("coverage.packages.", "coverage.modules."):
        if header.startswith(prefix):
            return header.removeprefix(prefix).strip('"')
    return None


def targets(rows: list[Row], margin: float) -> dict[tuple[str, str], float]:
    """``{(name, "line"|"branch"): floor}`` that the measured rows set (unmeasured rows: none)."""
    out = {}
    for row in rows:
        if row.line is not None and row.branch is not None:
            out[(row.name, "line")] = floor_from(row.line, margin)
            out[(row.name, "branch")] = floor_from(row.branch, margin)
    return out


def raise_floors(text: str, wanted: dict[tuple[str, str], float]) -> tuple[str, list[str]]:
    """Return ``text`` with every floor in ``wanted`` raised (never lowered), and the changes."""
    lines, changes, section = [], [], None
    for line in text.splitlines(keepends=True):
        header = HEADER.match(line.strip())
        if header:
            section = _section(header.group("name"))
        floor = FLOOR.match(line.rstrip("\n"))
        if section is not None and floor and (section, floor.group("key")) in wanted:
            current = float(floor.group("value"))
            new = wanted[(section, floor.group("key"))]
            if new > current:
                changes.append(f"coverage {section} {floor.group('key')}: {current} -> {new}")
                end = "\n" if line.endswith("\n") else ""
                line = f"{floor.group('key')}{floor.group('eq')}{new}{floor.group('rest')}{end}"
        lines.append(line)
    return "".join(lines), changes
