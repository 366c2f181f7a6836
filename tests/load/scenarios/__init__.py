"""Load and fault scenarios: plain functions that take a size and return counted results.

Each scenario module exposes ``run(config) -> ScenarioResult`` and two configurations,
``FULL`` (``python -m tests.load.runner``, what ``nox -s load`` runs) and ``QUICK``
(``--quick``); the tests in ``tests/load/`` call ``run`` with smaller ones still. A result
lists what the scenario *tried* (counts of actions and injected faults) and what it
*verified* (named checks, each with the observed and expected figure); the runner prints
both and fails when a check failed.

>>> from tests.load.scenarios import ScenarioResult
>>> r = ScenarioResult("demo")
>>> r.tried["requests"] = 10
>>> r.check("lost prompts", 0, 0)
>>> r.check("budget", 1.5, 1.0, ok=1.5 <= 1.0)
>>> r.passed, [c.name for c in r.failures]
(False, ['budget'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    """One verified property: its name, what was observed, what was expected, and the verdict."""

    name: str
    observed: Any
    expected: Any
    ok: bool


@dataclass
class ScenarioResult:
    """What a scenario tried, what it verified, and the figures it measured."""

    name: str
    tried: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, observed: Any, expected: Any, *, ok: bool | None = None) -> None:
        """Record a check; by default it passes when ``observed == expected``."""
        verdict = observed == expected if ok is None else ok
        self.checks.append(Check(name, observed, expected, bool(verdict)))

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    @property
    def passed(self) -> bool:
        """True when at least one check ran and none failed."""
        return bool(self.checks) and not self.failures

    def report(self) -> str:
        """A plain-text report: tried counts, checks with verdicts, figures, notes."""
        lines = [f"== {self.name}: {'PASS' if self.passed else 'FAIL'}", "  tried:"]
        lines += [f"    {k}: {v}" for k, v in self.tried.items()]
        lines.append("  verified:")
        for c in self.checks:
            mark = "ok  " if c.ok else "FAIL"
            lines.append(f"    [{mark}] {c.name}: {c.observed} (expected {c.expected})")
        if self.figures:
            lines.append("  figures:")
            lines += [f"    {k}: {v:.4g}" for k, v in self.figures.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``qa/perf/results/load.json``)."""
        return {
            "passed": self.passed,
            "tried": self.tried,
            "checks": [
                {"name": c.name, "observed": c.observed, "expected": c.expected, "ok": c.ok}
                for c in self.checks
            ],
            "figures": self.figures,
            "notes": self.notes,
        }
