"""Sphinx directives that render committed data files into the site at build time.

Every figure on the site comes from a results or QA file in the repository, read when the
site is built, so a page cannot claim a number that the code did not produce.

``.. kd-data-table:: qa/perf/results/losses.json``
    Renders a JSON or TOML file (or the part of it selected with ``:select: a.b``) as a
    table: a list of objects becomes one row per object, an object of scalars becomes
    key/value rows, and an object of objects becomes one row per key. ``:columns:`` limits
    and orders the columns. A missing file or path is a build error (with ``-W``), never an
    empty table.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]


def load_data(path: Path, select: str | None) -> Any:
    """Load ``path`` (JSON or TOML) and return the part named by the dotted ``select``."""
    text = path.read_text(encoding="utf-8")
    data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    for part in (select or "").split("."):
        if not part:
            continue
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def rows_of(data: Any) -> tuple[list[str], list[list[str]]]:
    """Turn loaded data into (header, rows) of strings."""
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        header: list[str] = []
        for item in data:
            header += [k for k in item if k not in header]
        return header, [[fmt(item.get(k, "")) for k in header] for item in data]
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        header = ["name"]
        for value in data.values():
            header += [k for k in value if k not in header]
        return header, [
            [str(key)] + [fmt(v.get(k, "")) for k in header[1:]] for key, v in data.items()
        ]
    if isinstance(data, dict):
        return ["key", "value"], [[str(k), fmt(v)] for k, v in data.items()]
    raise ValueError(f"cannot render {type(data).__name__} as a table")


def fmt(value: Any) -> str:
    """Format one cell: floats with 4 significant digits, containers as compact JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


class DataTable(SphinxDirective):
    """The ``kd-data-table`` directive (see the module docstring)."""

    required_arguments = 1
    option_spec = {  # noqa: RUF012 - docutils API
        "select": directives.unchanged,
        "columns": directives.unchanged,
        "caption": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        """Render the table, or report a build error naming the file and the problem."""
        path = ROOT / self.arguments[0]
        self.env.note_dependency(str(path))
        try:
            header, rows = rows_of(load_data(path, self.options.get("select")))
        except (OSError, KeyError, IndexError, ValueError) as exc:
            raise self.error(f"kd-data-table: {self.arguments[0]}: {exc!r}") from exc
        if "columns" in self.options:
            wanted = [c.strip() for c in self.options["columns"].split(",")]
            missing = [c for c in wanted if c not in header]
            if missing:
                raise self.error(f"kd-data-table: {self.arguments[0]}: no column(s) {missing}")
            index = [header.index(c) for c in wanted]
            header, rows = wanted, [[row[i] for i in index] for row in rows]
        return [self._table(header, rows)]

    def _table(self, header: list[str], rows: list[list[str]]) -> nodes.table:
        table = nodes.table()
        if "caption" in self.options:
            table += nodes.title(text=self.options["caption"])
        group = nodes.tgroup(cols=len(header))
        table += group
        group.extend(nodes.colspec(colwidth=1) for _ in header)
        thead = nodes.thead()
        thead += self._row(header)
        group += thead
        tbody = nodes.tbody()
        tbody.extend(self._row(row) for row in rows)
        group += tbody
        return table

    @staticmethod
    def _row(cells: list[str]) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=cell)
            row += entry
        return row


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives."""
    app.add_directive("kd-data-table", DataTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
