"""Sphinx directive ``kd-mutation-report``: the recorded mutation report as HTML.

``.. kd-mutation-report:: qa/mutation/report.json`` reads a mutation-testing-report-schema
file when the site is built and renders it with :func:`qa.mutation.html_report.fragment`
(inline CSS, no script, no network): each critical module's score and counts, then each
file's source with its surviving mutants under their lines. A missing or invalid report is
a build error, never an empty page.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]


class MutationReport(SphinxDirective):
    """The ``kd-mutation-report`` directive (one argument: the report, from the repo root)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """Render the report into a raw HTML node."""
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from qa.mutation import html_report, stryker

        path = ROOT / self.arguments[0]
        self.env.note_dependency(str(path))
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self.error(f"kd-mutation-report: {self.arguments[0]}: {exc!r}") from exc
        problems = stryker.problems(report)
        if problems:
            raise self.error(f"kd-mutation-report: {self.arguments[0]}: {problems[:3]}")
        return [nodes.raw("", html_report.fragment(report), format="html")]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("kd-mutation-report", MutationReport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
