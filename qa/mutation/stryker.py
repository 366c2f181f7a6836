"""The run's results in the mutation-testing-report-schema (Stryker's format, schema 2).

One JSON object: ``schemaVersion``, ``thresholds`` (``high``/``low``, whole percent),
``files`` keyed by the path from the repository root, each with its ``language``, its full
``source`` and its ``mutants`` (``id``, ``mutatorName``, ``replacement``, ``location`` with
1-based ``start``/``end`` line and column, ``status``, ``coveredBy``, ``killedBy``, ...).
Stryker's dashboard, its HTML elements and other tools read it; :mod:`qa.mutation.html`
renders it here without a network. Our own additions live under ``config`` (free-form in
the schema): the mode of the run and, per critical module, how many mutants it has.

score = (Killed + Timeout) / (Killed + Timeout + Survived + NoCoverage), in percent: a
mutant no test runs counts against the score; RuntimeError, CompileError and Ignored are
left out (they say nothing about the tests).

>>> c = Counts.of(["Killed"] * 8 + ["Survived", "NoCoverage", "RuntimeError"])
>>> c.score, c.judged
(80.0, 10)
>>> [round(x, 1) for x in wilson(8, 10)]
[49.0, 94.3]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = "2"
STATUSES = (
    "Killed",
    "Survived",
    "NoCoverage",
    "CompileError",
    "RuntimeError",
    "Timeout",
    "Ignored",
    "Pending",
)
DETECTED = ("Killed", "Timeout")
UNDETECTED = ("Survived", "NoCoverage")


@dataclass(frozen=True)
class Counts:
    """How many mutants ended in each status."""

    by_status: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, statuses: Iterable[str]) -> Counts:
        """Count a list of statuses."""
        c = Counter(statuses)
        return cls(tuple((s, c[s]) for s in STATUSES if c[s]))

    def get(self, status: str) -> int:
        """The number of mutants with ``status``."""
        return dict(self.by_status).get(status, 0)

    @property
    def detected(self) -> int:
        """Killed + Timeout."""
        return sum(self.get(s) for s in DETECTED)

    @property
    def judged(self) -> int:
        """The mutants that count: detected + Survived + NoCoverage."""
        return self.detected + sum(self.get(s) for s in UNDETECTED)

    @property
    def total(self) -> int:
        """Every mutant, Pending included."""
        return sum(n for _, n in self.by_status)

    @property
    def score(self) -> float | None:
        """Detected / judged, percent, two decimals; None when nothing was judged."""
        return None if self.judged == 0 else round(100.0 * self.detected / self.judged, 2)

    def as_dict(self) -> dict[str, int]:
        """``{status: count}`` for every status that occurred."""
        return dict(self.by_status)


def wilson(detected: int, judged: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of ``detected / judged``, in percent.

    The interval to quote for a score measured on a sample of a module's mutants: unlike
    the normal approximation it stays inside [0, 100] and is honest at 0 or 100 %.

    >>> wilson(10, 10)[0] > 69, wilson(10, 10)[1]
    (True, 100.0)
    """
    if judged <= 0:
        return 0.0, 100.0
    p = detected / judged
    denom = 1 + z * z / judged
    centre = (p + z * z / (2 * judged)) / denom
    half = z * math.sqrt(p * (1 - p) / judged + z * z / (4 * judged * judged)) / denom
    return round(100 * max(0.0, centre - half), 2), round(100 * min(1.0, centre + half), 2)


def mutant_entry(
    mutant_id: str,
    mutator: str,
    replacement: str,
    span: tuple[int, int, int, int],
    status: str,
    **extra: Any,
) -> dict[str, Any]:
    """One ``MutantResult``; ``span`` is (line, column, end line, end column), 1-based."""
    line, col, end_line, end_col = span
    out: dict[str, Any] = {
        "id": mutant_id,
        "mutatorName": mutator,
        "replacement": replacement,
        "location": {
            "start": {"line": line, "column": col},
            "end": {"line": end_line, "column": max(1, end_col)},
        },
        "status": status,
    }
    out.update({k: v for k, v in extra.items() if v not in (None, "", [], ())})
    return out


def new_report(high: int, low: int, config: dict[str, Any]) -> dict[str, Any]:
    """An empty report with its thresholds and our ``config``."""
    return {
        "$schema": "https://git.io/mutation-testing-schema",
        "schemaVersion": SCHEMA_VERSION,
        "thresholds": {"high": int(high), "low": int(low)},
        "files": {},
        "framework": {"name": "qa.mutation", "version": "2"},
        "config": config,
    }


def problems(report: Any) -> list[str]:
    """What makes ``report`` invalid against the schema's required parts ([] when valid).

    >>> problems({"schemaVersion": "2", "thresholds": {"high": 80, "low": 60}, "files": {}})
    []
    >>> problems({"schemaVersion": 2, "files": {"a.py": {"language": "python"}}})[:3]
    ['schemaVersion: not a string', 'thresholds: missing', 'files.a.py.source: missing']
    """
    out: list[str] = []
    if not isinstance(report, dict):
        return ["the report is not an object"]
    if not isinstance(report.get("schemaVersion"), str):
        out.append(
            "schemaVersion: " + ("missing" if "schemaVersion" not in report else "not a string")
        )
    th = report.get("thresholds")
    if not isinstance(th, dict):
        out.append("thresholds: missing")
    else:
        for k in ("high", "low"):
            v = th.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                out.append(f"thresholds.{k}: not an integer in 0..100")
    files = report.get("files")
    if not isinstance(files, dict):
        return [*out, "files: missing"]
    for path, f in files.items():
        where = f"files.{path}"
        for k, kind in (("language", str), ("source", str), ("mutants", list)):
            if not isinstance(f.get(k), kind):
                out.append(f"{where}.{k}: missing")
        ids: set[str] = set()
        for i, m in enumerate(f.get("mutants") or []):
            out += _mutant_problems(m, f"{where}.mutants[{i}]", ids)
    return out


def _mutant_problems(m: Any, where: str, ids: set[str]) -> list[str]:
    out = []
    for k in ("id", "mutatorName", "status"):
        if not isinstance(m.get(k), str):
            out.append(f"{where}.{k}: missing")
    if m.get("status") not in STATUSES:
        out.append(f"{where}.status: {m.get('status')!r} is not one of {', '.join(STATUSES)}")
    if m.get("id") in ids:
        out.append(f"{where}.id: {m.get('id')!r} twice")
    ids.add(m.get("id"))
    loc = m.get("location") or {}
    for end in ("start", "end"):
        pos = loc.get(end)
        ok = isinstance(pos, dict) and all(
            isinstance(pos.get(k), int) and pos[k] >= 1 for k in ("line", "column")
        )
        if not ok:
            out.append(f"{where}.location.{end}: needs line and column >= 1")
    return out


def module_counts(report: dict[str, Any], files: Iterable[str]) -> Counts:
    """The counts over the mutants of ``files`` (the files of one critical module)."""
    wanted = set(files)
    return Counts.of(
        m["status"]
        for path, f in report["files"].items()
        if path in wanted
        for m in f["mutants"]
        if m["status"] != "Pending"
    )


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several (the shards of one run): a mutant's verdict wins over Pending."""
    if not reports:
        raise ValueError("nothing to merge")
    out = {**reports[0], "files": {}}
    by_file: dict[str, dict[str, dict[str, Any]]] = {}
    for rep in reports:
        for path, f in rep["files"].items():
            slot = out["files"].setdefault(path, {**f, "mutants": []})
            seen = by_file.setdefault(path, {})
            for m in f["mutants"]:
                old = seen.get(m["id"])
                if old is None or old["status"] == "Pending":
                    seen[m["id"]] = m
            slot["mutants"] = list(seen.values())
    modules: dict[str, Any] = {}
    for rep in reports:
        for name, info in rep.get("config", {}).get("modules", {}).items():
            prev = modules.get(name, {})
            modules[name] = {
                **info,
                "selected": prev.get("selected", 0) + info.get("selected", 0),
                "seconds": round(prev.get("seconds", 0.0) + info.get("seconds", 0.0), 1),
            }
    walls = [float(r.get("config", {}).get("seconds", 0.0)) for r in reports]
    out["config"] = {
        **out.get("config", {}),
        "modules": modules,
        "merged": len(reports),
        "seconds": max(walls),
        "shard_seconds": walls,
    }
    return out
