"""Parse mutatest's RST report (``-o FILE``) into counts, a score and the surviving mutants.

score = (detected + timeout) / (total - errors - unknown), in percent: a mutant that makes
the tests hang was caught; one whose trial crashed or ended oddly says nothing either way.

>>> counts = Counts(detected=6, timeout=2, survived=2, errors=1, unknown=1)
>>> counts.total, counts.score
(12, 80.0)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_COUNT = re.compile(r"^ - (DETECTED|SURVIVED|TIMEOUT|ERROR|UNKNOWN): (\d+)$")
_SECTION = re.compile(r"^(DETECTED|SURVIVED|TIMEOUT|ERROR|UNKNOWN)$")
_MUTANT = re.compile(
    r"^ - (?P<file>.+?): \(l: (?P<line>\d+), c: (?P<col>\d+)\) - mutation from "
    r"(?P<src>.+) to (?P<dst>.+)$"
)
_CLASS = re.compile(r"<class '(?:_?ast\.)?(\w+)'>")


@dataclass(frozen=True)
class Counts:
    """Trial outcomes of one run."""

    detected: int = 0
    survived: int = 0
    timeout: int = 0
    errors: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        """Every trial."""
        return self.detected + self.survived + self.timeout + self.errors + self.unknown

    @property
    def score(self) -> float | None:
        """(detected + timeout) / (total - errors - unknown) in percent; None if no trial."""
        judged = self.total - self.errors - self.unknown
        return None if judged <= 0 else round(100.0 * (self.detected + self.timeout) / judged, 2)


@dataclass(frozen=True)
class Mutant:
    """One mutant: where, and what was changed into what."""

    file: str
    line: int
    col: int
    original: str
    mutation: str

    def describe(self) -> str:
        """``file:line:col  original -> mutation`` (what a developer needs to write a test)."""
        return f"{self.file}:{self.line}:{self.col}  {self.original} -> {self.mutation}"


@dataclass(frozen=True)
class Report:
    """A parsed report."""

    counts: Counts
    survivors: list[Mutant] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "counts": asdict(self.counts),
            "total": self.counts.total,
            "score": self.counts.score,
            "survivors": [asdict(m) for m in self.survivors],
        }


def _op(text: str) -> str:
    return _CLASS.sub(r"\1", text.strip())


def parse(text: str) -> Report:
    """Parse the text of a mutatest report (the summary counts and the SURVIVED section).

    >>> r = parse(EXAMPLE)
    >>> r.counts
    Counts(detected=1, survived=1, timeout=0, errors=0, unknown=0)
    >>> r.survivors[0].describe()
    'src/m.py:3:11  Add -> Sub'
    """
    counts: dict[str, int] = {}
    survivors = []
    section = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if m := _COUNT.match(line):
            counts.setdefault(m.group(1), int(m.group(2)))
        elif m := _SECTION.match(line):
            section = m.group(1)
        elif section == "SURVIVED" and (m := _MUTANT.match(line)):
            survivors.append(
                Mutant(
                    file=m.group("file"),
                    line=int(m.group("line")),
                    col=int(m.group("col")),
                    original=_op(m.group("src")),
                    mutation=_op(m.group("dst")),
                )
            )
    return Report(
        Counts(
            detected=counts.get("DETECTED", 0),
            survived=counts.get("SURVIVED", 0),
            timeout=counts.get("TIMEOUT", 0),
            errors=counts.get("ERROR", 0),
            unknown=counts.get("UNKNOWN", 0),
        ),
        survivors,
    )


EXAMPLE = """\
Overall mutation trial summary
==============================
 - SURVIVED: 1
 - DETECTED: 1
 - TOTAL RUNS: 2

SURVIVED
--------
 - src/m.py: (l: 3, c: 11) - mutation from <class 'ast.Add'> to <class 'ast.Sub'>

DETECTED
--------
 - src/m.py: (l: 3, c: 11) - mutation from <class 'ast.Add'> to <class 'ast.Mult'>
"""
