"""Merge the per-benchmark results into the machine file and draw one PNG chart per group.

Each benchmark script writes ``qa/perf/results/<name>.json``; :func:`merge` gathers them
(and the load scenarios' ``load.json``) into ``qa/perf/results/<machine-id>.json``::

    {"machine": {"id": "2c-…", "system": …, "cpu": …, "cores": 2, "mem_gib": 24},
     "benchmarks": {"data": {...}, "losses": {...}, ...}, "load": {...}}

:func:`draw_charts` writes ``docs/_static/perf/<group>.png`` (matplotlib, Agg backend): a
dedicated chart for the groups whose shape it knows (``data``, ``losses``, ``load``) and
a bar chart of the numeric figures for any other group.

>>> from qa.perf.report import numeric_leaves
>>> numeric_leaves({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": True})
{'a': 1.0, 'b.c': 2.5}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa.perf.common import DOCS_CHARTS, RESULTS, machine_facts, machine_id, read_json, write_json

#: Result files that are not benchmark groups.
NOT_BENCHMARKS = {"load"}


def numeric_leaves(data: Any, prefix: str = "") -> dict[str, float]:
    """Flatten nested dicts to ``{"a.b": number}`` (booleans and strings left out)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(numeric_leaves(value, f"{prefix}{key}."))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        out[prefix.rstrip(".")] = float(data)
    return out


def benchmark_results(results: Path = RESULTS) -> dict[str, Any]:
    """``{name: data}`` of every ``<name>.json`` in ``results`` except machine files."""
    found = {}
    for path in sorted(results.glob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and "machine" not in data:
            found[path.stem] = data
    return found


def merge(results: Path = RESULTS) -> Path:
    """Write ``<machine-id>.json`` from the per-benchmark files; return its path."""
    facts = machine_facts()
    mid = machine_id(facts)
    groups = benchmark_results(results)
    payload = {
        "machine": {"id": mid, **facts},
        "benchmarks": {k: v for k, v in groups.items() if k not in NOT_BENCHMARKS},
        "load": groups.get("load", {}),
    }
    target = results / f"{mid}.json"
    write_json(target, payload)
    return target


def _figure(ncols: int = 2) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8))
    return plt, fig, axes


def chart_data(data: dict[str, Any], out: Path) -> None:
    """Reader rows/s and peak RSS against the number of rows (log x), one line per path."""
    plt, fig, (speed, memory) = _figure()
    entries = sorted(data["sizes"].values(), key=lambda e: e["rows"])
    rows = [e["rows"] for e in entries]
    for path in ("json", "stream", "read"):
        speed.plot(rows, [e[f"{path}_rows_per_s"] for e in entries], "o-", label=path)
        memory.plot(rows, [e[f"{path}_peak_rss_mb"] for e in entries], "o-", label=path)
    for ax, title, unit in ((speed, "throughput", "rows/s"), (memory, "peak RSS", "MB")):
        ax.set_xscale("log")
        ax.set_xlabel("rows in the file")
        ax.set_ylabel(unit)
        ax.set_title(f"dataset reader: {title}")
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def chart_losses(data: dict[str, Any], out: Path) -> None:
    """Loss forward+backward time and peak memory per configuration and implementation."""
    plt, fig, (time_ax, mem_ax) = _figure()
    keys = sorted(data.get("figures", {}))
    impls = sorted({impl for k in keys for impl in data["figures"][k]})
    width = 0.8 / max(1, len(impls))
    for i, impl in enumerate(impls):
        cells = [data["figures"][k].get(impl, {}) for k in keys]
        xs = [j + i * width for j in range(len(keys))]
        time_ax.bar(xs, [c.get("seconds", 0.0) for c in cells], width, label=impl)
        mem_ax.bar(xs, [c.get("peak_mb", 0.0) for c in cells], width, label=impl)
    for ax, title in ((time_ax, "forward+backward seconds"), (mem_ax, "peak MB")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        ax.set_xticklabels([k.replace("/", "\n") for k in keys], fontsize=7)
        ax.set_title(f"KD loss: {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def chart_load(data: dict[str, Any], out: Path) -> None:
    """Checks passed / failed per load scenario."""
    plt, fig, ax = _figure(1)
    names = sorted(data)
    passed = [sum(c["ok"] for c in data[n]["checks"]) for n in names]
    failed = [sum(not c["ok"] for c in data[n]["checks"]) for n in names]
    ax.barh(names, passed, color="tab:green", label="checks passed")
    ax.barh(names, failed, left=passed, color="tab:red", label="checks failed")
    ax.set_title("load and fault scenarios")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def chart_generic(name: str, data: dict[str, Any], out: Path) -> None:
    """Horizontal bars of a group's numeric figures (log scale when they span decades)."""
    plt, fig, ax = _figure(1)
    figures = {k: v for k, v in numeric_leaves(data).items() if v > 0}
    labels = list(figures)[:30]
    ax.barh(labels, [figures[k] for k in labels])
    values = [figures[k] for k in labels]
    if values and max(values) / min(values) > 100:
        ax.set_xscale("log")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{name}: figures")
    fig.set_size_inches(8, 1.5 + 0.25 * len(labels))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


CHARTS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "data": chart_data,
    "losses": chart_losses,
    "load": chart_load,
}


def draw_charts(results: Path = RESULTS, charts: Path = DOCS_CHARTS) -> list[Path]:
    """Draw one PNG per result group into ``charts``; return the files written."""
    charts.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in benchmark_results(results).items():
        out = charts / f"{name}.png"
        tmp = out.with_name(f".{out.stem}.tmp.png")
        draw = CHARTS.get(name)
        if draw is not None:
            draw(data, tmp)
        else:
            chart_generic(name, data, tmp)
        tmp.replace(out)
        written.append(out)
    return written
