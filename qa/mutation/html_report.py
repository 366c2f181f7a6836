r"""A mutation-testing-report-schema JSON rendered as one self-contained HTML page.

No script, no font, no network: inline CSS and ``<details>`` elements. A table gives each
critical module's score (with its 95 % Wilson interval when the run was a sample), its
floor and its counts; then each file's source, every line that holds a mutant marked by
what became of it, and under a line with a surviving mutant the mutants themselves
(``mutator -> replacement``), so a reader sees which test to write.

>>> report = {"schemaVersion": "2", "thresholds": {"high": 80, "low": 60}, "config": {},
...     "files": {"m.py": {"language": "python", "source": "x = a < b\n", "mutants": [
...     {"id": "1", "mutatorName": "EqualityOperator", "replacement": "<=", "status": "Survived",
...      "location": {"start": {"line": 1, "column": 5}, "end": {"line": 1, "column": 10}}}]}}}
>>> text = fragment(report)
>>> "EqualityOperator" in text and "&lt;=" in text and "class='line survived'" in text
True
"""

from __future__ import annotations

from html import escape
from typing import Any

from qa.mutation import stryker

STYLE = """
.kdm {font-family: system-ui, sans-serif; font-size: 14px}
.kdm table.sum {border-collapse: collapse; margin: 0.5em 0 1em}
.kdm table.sum td, .kdm table.sum th {border: 1px solid #ccc; padding: 2px 8px; text-align: right}
.kdm table.sum td:first-child, .kdm table.sum th:first-child {text-align: left}
.kdm .good {background: #dff3df} .kdm .warn {background: #fff4d6} .kdm .bad {background: #fbdcdc}
.kdm pre.src {font: 12px/1.45 ui-monospace, monospace; margin: 0; overflow-x: auto}
.kdm .line {display: block; white-space: pre}
.kdm .line .no {display: inline-block; width: 4em; color: #888; user-select: none}
.kdm .line.killed {background: #eef8ee} .kdm .line.survived {background: #fbdcdc}
.kdm .line.nocoverage {background: #fff0c2} .kdm .line.other {background: #eef}
.kdm .mut {display: block; white-space: pre-wrap; margin-left: 4em; color: #7a1010}
.kdm .mut.nocoverage {color: #7a5a00}
.kdm summary {cursor: pointer; margin: 0.3em 0}
"""

#: Line classes, worst first: a line shows the worst fate among its mutants.
_ORDER = ("Survived", "NoCoverage", "Timeout", "RuntimeError", "CompileError", "Killed")


def _band(score: float | None, high: int, low: int) -> str:
    if score is None:
        return ""
    return "good" if score >= high else "warn" if score >= low else "bad"


def _modules(report: dict[str, Any]) -> list[tuple[str, list[str], dict[str, Any]]]:
    mods = report.get("config", {}).get("modules", {})
    out = [(name, info.get("files", []), info) for name, info in mods.items()]
    listed = {f for _, files, _ in out for f in files}
    rest = sorted(set(report["files"]) - listed)
    if rest:
        out.append(("(other files)", rest, {}))
    return out


def _summary(report: dict[str, Any]) -> str:
    high, low = report["thresholds"]["high"], report["thresholds"]["low"]
    rows = []
    for name, files, info in _modules(report):
        c = stryker.module_counts(report, files)
        score = c.score
        total, selected = info.get("total", c.total), info.get("selected", c.total)
        text = "-" if score is None else f"{score:.1f}%"
        if score is not None and 0 < selected < total:
            lo, hi = stryker.wilson(c.detected, c.judged)
            text += f" (95% CI {lo:.0f}&ndash;{hi:.0f}, {selected} of {total} mutants)"
        floor = info.get("floor")
        cells = [
            escape(name),
            text,
            "-" if floor is None else f"{floor:.0f}%",
            *(str(c.get(s)) for s in ("Killed", "Timeout", "Survived", "NoCoverage")),
            str(c.get("RuntimeError") + c.get("CompileError") + c.get("Ignored")),
        ]
        tds = "".join(
            f"<td class='{_band(score, high, low)}'>{x}</td>" if i == 1 else f"<td>{x}</td>"
            for i, x in enumerate(cells)
        )
        rows.append(f"<tr>{tds}</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "module",
            "score",
            "floor",
            "killed",
            "timeout",
            "survived",
            "no coverage",
            "error",
        )
    )
    return f"<table class='sum'><tr>{head}</tr>{''.join(rows)}</table>"


def _file(path: str, f: dict[str, Any]) -> str:
    by_line: dict[int, list[dict[str, Any]]] = {}
    for m in f["mutants"]:
        by_line.setdefault(m["location"]["start"]["line"], []).append(m)
    survivors = sum(m["status"] in ("Survived", "NoCoverage") for m in f["mutants"])
    lines = []
    for n, text in enumerate(f["source"].splitlines(), 1):
        muts = by_line.get(n, [])
        fates = {m["status"] for m in muts}
        worst = next((s for s in _ORDER if s in fates), "")
        cls = {"Survived": "survived", "NoCoverage": "nocoverage", "Killed": "killed"}.get(
            worst, "other" if worst else ""
        )
        lines.append(
            f"<span class='line {cls}'><span class='no'>{n}</span>{escape(text)}</span>".replace(
                "class='line '", "class='line'"
            )
        )
        for m in muts:
            if m["status"] in ("Survived", "NoCoverage"):
                kind = "nocoverage" if m["status"] == "NoCoverage" else ""
                col = m["location"]["start"]["column"]
                lines.append(
                    f"<span class='mut {kind}'>&#8627; {escape(m['status'])}: col {col} "
                    f"{escape(m['mutatorName'])} -&gt; {escape(str(m.get('replacement', '')))}"
                    "</span>"
                )
    c = stryker.Counts.of(m["status"] for m in f["mutants"] if m["status"] != "Pending")
    score = "-" if c.score is None else f"{c.score:.1f}%"
    opened = " open" if survivors else ""
    return (
        f"<details{opened}><summary><code>{escape(path)}</code>: {score}, "
        f"{len(f['mutants'])} mutants, {survivors} not detected</summary>"
        f"<pre class='src'>{''.join(lines)}</pre></details>"
    )


def fragment(report: dict[str, Any]) -> str:
    """The report as an HTML fragment (a ``<div>`` with its own ``<style>``)."""
    cfg = report.get("config", {})
    facts = ", ".join(
        f"{k} {escape(str(cfg[k]))}" for k in ("mode", "sha", "seconds", "jobs") if cfg.get(k)
    )
    files = "".join(_file(p, f) for p, f in sorted(report["files"].items()))
    return (
        f"<div class='kdm'><style>{STYLE}</style>"
        f"<p>mutation-testing-report-schema {escape(str(report.get('schemaVersion')))}; "
        f"{facts}</p>{_summary(report)}{files}</div>"
    )


def page(report: dict[str, Any], title: str) -> str:
    """A whole standalone HTML page of the report."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title></head><body><h1>{escape(title)}</h1>"
        f"{fragment(report)}</body></html>\n"
    )
