"""``python -m qa.coverage check COVERAGE_JSON``: fail when a package is below its floor."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

GATES = Path(__file__).resolve().parents[1] / "gates.toml"


def package_totals(report: dict) -> dict[str, tuple[float, float]]:
    """Return {package: (line %, branch %)} summed over the report's files."""
    sums: dict[str, list[int]] = {}
    for name, data in report["files"].items():
        parts = Path(name).parts
        pkg = next((p for p in parts if p.startswith("kd_")), None)
        if pkg is None:
            continue
        s = data["summary"]
        acc = sums.setdefault(pkg, [0, 0, 0, 0])
        acc[0] += s["covered_lines"]
        acc[1] += s["num_statements"]
        acc[2] += s.get("covered_branches", 0)
        acc[3] += s.get("num_branches", 0)
    return {p: (100.0 * a[0] / max(a[1], 1), 100.0 * a[2] / max(a[3], 1)) for p, a in sums.items()}


def main(argv: list[str]) -> int:
    """Check the report named in ``argv`` against the package floors."""
    if len(argv) != 2 or argv[0] != "check":
        print("usage: python -m qa.coverage check COVERAGE_JSON", file=sys.stderr)
        return 2
    report = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    floors = tomllib.loads(GATES.read_text(encoding="utf-8"))["coverage"]["packages"]
    totals = package_totals(report)
    failed = False
    for pkg, floor in sorted(floors.items()):
        line, branch = totals.get(pkg, (0.0, 0.0))
        ok = line >= floor["line"] and branch >= floor["branch"]
        failed |= not ok
        print(
            f"{pkg:12s} line {line:6.2f}% (floor {floor['line']})  branch {branch:6.2f}% "
            f"(floor {floor['branch']})  {'ok' if ok else 'BELOW FLOOR'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
