"""Sphinx directive ``kd-qa-coverage-status``: the coverage section of the QA status page.

Renders :func:`qa.coverage.status.render` when the page is built: floors read from
``qa/gates.toml``, figures from the latest record ``qa/coverage/record.json``, the commit
and date of each, and a warning on every row whose code changed after the record. The page
is rebuilt whenever either file changes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]


class CoverageStatus(SphinxDirective):
    """The ``kd-qa-coverage-status`` directive (no arguments)."""

    def run(self) -> list[nodes.Node]:
        """Parse the rendered markdown into this page."""
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from qa import gates
        from qa.coverage.status import RECORD, render

        for path in (RECORD, gates.GATES):
            self.env.note_dependency(str(path))
        return self.parse_text_to_nodes(render())


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("kd-qa-coverage-status", CoverageStatus)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
