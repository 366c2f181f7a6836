"""Sphinx directives that render committed data files into the site at build time.

Every figure on the site comes from a results or QA file in the repository, read when the
site is built, so a page cannot claim a number that the code did not produce.

``.. kd-data-table:: qa/perf/results/losses.json``
    Renders a JSON or TOML file (or the part of it selected with ``:select: a.b``) as a
    table: a list of objects becomes one row per object, an object of scalars becomes
    key/value rows, and an object of objects becomes one row per key. ``:columns:`` limits
    and orders the columns; ``:flatten:`` turns nested objects inside each row into dotted
    columns (``kd.tokens_per_s``). A missing file or path is a build error (with ``-W``), never an
    empty table.

``.. kd-history-plot:: qa/mutation/history.jsonl``
    Plots a JSON-lines history (one object per run) as a PNG drawn at build time: ``:y:``
    names the figure (default ``score``), ``:group:`` the key whose values get one line each
    (default ``module``), ``:x:`` the run order key (default ``date``).
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
    """Load ``path`` (JSON, JSON lines or TOML); return the part named by the dotted ``select``."""
    text = path.read_text(encoding="utf-8")
    data: Any
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix == ".jsonl":
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
    for part in (select or "").split("."):
        if not part:
            continue
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects of ``row`` as dotted keys.

    >>> flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}})
    {'a': 1, 'b.c': 2, 'b.d.e': 3}
    """
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def rows_of(data: Any, flat: bool = False) -> tuple[list[str], list[list[str]]]:
    """Turn loaded data into (header, rows) of strings (``flat``: see :func:`flatten`)."""
    if flat and isinstance(data, list):
        data = [flatten(item) if isinstance(item, dict) else item for item in data]
    elif flat and isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        data = {key: flatten(value) for key, value in data.items()}
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
        "flatten": directives.flag,
    }

    def run(self) -> list[nodes.Node]:
        """Render the table, or report a build error naming the file and the problem."""
        path = ROOT / self.arguments[0]
        self.env.note_dependency(str(path))
        try:
            data = load_data(path, self.options.get("select"))
            header, rows = rows_of(data, flat="flatten" in self.options)
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


def plot_history(
    rows: list[dict[str, Any]], x: str, y: str, group: str, title: str, out: Path
) -> Path:
    """Draw ``y`` against run order, one line per ``group`` value; write a PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    order = sorted({str(r[x]) for r in rows})
    for name in sorted({str(r[group]) for r in rows}):
        runs = sorted((r for r in rows if str(r[group]) == name), key=lambda r: str(r[x]))
        xs = [order.index(str(r[x])) for r in runs]
        ax.plot(xs, [float(r[y]) for r in runs], marker="o", label=name)
    ax.set_xticks(range(len(order)), [v[:16] for v in order])
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


class HistoryPlot(SphinxDirective):
    """The ``kd-history-plot`` directive (see the module docstring)."""

    required_arguments = 1
    option_spec = {  # noqa: RUF012 - docutils API
        "x": directives.unchanged,
        "y": directives.unchanged,
        "group": directives.unchanged,
        "title": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        """Draw the plot into ``docs/_generated/`` and return an image node for it."""
        path = ROOT / self.arguments[0]
        self.env.note_dependency(str(path))
        x, y = self.options.get("x", "date"), self.options.get("y", "score")
        group = self.options.get("group", "module")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines if line.strip()]
            if not rows:
                raise ValueError("no runs recorded")
            name = path.stem + "-" + y + ".png"
            out = Path(self.env.srcdir) / "_generated" / name
            plot_history(rows, x, y, group, self.options.get("title", ""), out)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise self.error(f"kd-history-plot: {self.arguments[0]}: {exc!r}") from exc
        return [nodes.image(uri=f"/_generated/{name}", alt=f"{y} by {group} over runs")]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives."""
    app.add_directive("kd-data-table", DataTable)
    app.add_directive("kd-history-plot", HistoryPlot)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
