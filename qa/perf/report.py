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

from qa.perf.common import DOCS_CHARTS, RESULTS, machine_facts, machine_id, read_json
from qa.summary import write_json

#: Result files that are not benchmark groups.
NOT_BENCHMARKS = {"load"}

#: Result files of experiments (training arms measured on held-out data), not timings of
#: this machine: their scripts draw their own figures, so they are neither merged into the
#: machine record nor charted here.
EVIDENCE = {"cross_tokenizer", "on_policy_evidence", "qat", "showcase"}


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
        "benchmarks": {
            k: v for k, v in groups.items() if k not in NOT_BENCHMARKS and k not in EVIDENCE
        },
        "load": groups.get("load", {}),
    }
    target = results / f"{mid}.json"
    write_json(target, payload)
    return target


def _figure(ncols: int = 2, rows: int = 1) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, ncols, figsize=(5.2 * ncols, 3.8 * rows))
    return plt, fig, axes


def _save(plt: Any, fig: Any, out: Path) -> None:
    """Lay out, write ``out`` as a 100-dpi PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


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
    _save(plt, fig, out)


#: One colour per loss implementation in every panel (the line style tells the loss).
IMPL_COLORS = {"naive": "tab:red", "chunked": "tab:blue", "liger": "tab:green",
               "torchtune": "tab:purple"}  # fmt: skip

#: ``{(loss, impl): [(vocab, tokens, figures)]}``
LossPoints = dict[tuple[str, str], list[tuple[int, int, dict[str, float]]]]


def _losses_points(data: dict[str, Any]) -> LossPoints:
    """``{(loss, impl): [(vocab, tokens, figures)]}`` of the measured loss configurations."""
    points: LossPoints = {}
    for key, impls in data.get("figures", {}).items():
        loss, vocab, tokens = key.split("/")
        for impl, fig in impls.items():
            if "seconds" in fig:
                entry = (int(vocab[1:]), int(tokens[1:]), fig)
                points.setdefault((loss, impl), []).append(entry)
    return points


def chart_losses(data: dict[str, Any], out: Path) -> None:
    """Loss forward+backward time and peak memory against tokens and against vocabulary.

    Top row: at the most common vocabulary, against the number of tokens; bottom row: at
    the most common token count, against the vocabulary (log-log, one line per loss and
    implementation).
    """
    points = _losses_points(data)
    every = [(v, n) for entries in points.values() for v, n, _ in entries]
    if not every:
        return chart_generic("losses", data, out)
    fixed_vocab = max(set(every), key=lambda vn: sum(v == vn[0] for v, _ in every))[0]
    fixed_tokens = max(set(every), key=lambda vn: sum(n == vn[1] for _, n in every))[1]
    plt, fig, axes = _figure(2, rows=2)
    panels = (
        (axes[0], "tokens", fixed_vocab, 0),
        (axes[1], "vocabulary", fixed_tokens, 1),
    )
    for (time_ax, mem_ax), axis, held, index in panels:
        for (loss, impl), entries in sorted(points.items()):
            # index 0: vary tokens at the held vocabulary; 1: vary vocabulary at held tokens
            kept = sorted(
                ((n if index == 0 else v, f) for v, n, f in entries
                 if (v if index == 0 else n) == held),
                key=lambda pair: pair[0],
            )  # fmt: skip
            if not kept:
                continue
            xs = [x for x, _ in kept]
            style = "o-" if loss == "forward_kl" else "s--"
            look = {"label": f"{impl} {loss}", "color": IMPL_COLORS.get(impl)}
            time_ax.plot(xs, [f["seconds"] for _, f in kept], style, **look)
            mem_ax.plot(xs, [max(f["peak_mb"], 1.0) for _, f in kept], style, **look)
        held_name = "vocab" if axis == "tokens" else "tokens"
        for ax, what in ((time_ax, "seconds"), (mem_ax, "peak MB")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_title(f"KD loss fwd+bwd {what} ({held_name} {held:,})", fontsize=9)
            ax.legend(fontsize=6)
    _save(plt, fig, out)


#: One colour per training arm in the train charts.
TRAIN_COLORS = {"kd": "tab:blue", "trl": "tab:red", "liger": "tab:green"}


def chart_train(data: dict[str, Any], out: Path) -> None:
    """kd-train against TRL: the batch-size panels, then the long-sequence memory panels.

    Batch sizes: tokens/s and peak memory growth against the batch. Long sequences: peak
    growth (solid) and peak RSS (dotted) per arm against the sequence length, and against
    the vocabulary at the sweep's length.
    """
    mode = data.get("full") or data.get("quick") or {}
    sizes = mode.get("sizes", {})
    long = data.get("long", {}).get("full") or data.get("long", {}).get("quick") or {}
    panels = [p for p, ok in (("batch", len(sizes) >= 2), ("long", bool(long))) if ok]
    if not panels:
        return chart_generic("train", data, out)
    plt, fig, axes = _figure(2, rows=len(panels))
    rows = axes if len(panels) > 1 else [axes]
    for (left, right), panel in zip(rows, panels, strict=True):
        if panel == "batch":
            _train_batch_panels(left, right, sizes)
        else:
            _train_long_panels(left, right, long)
    _save(plt, fig, out)


def _train_batch_panels(speed: Any, memory: Any, sizes: dict[str, Any]) -> None:
    batches = sorted(sizes, key=int)
    for side in ("kd", "trl"):
        ok = [b for b in batches if "tokens_per_s" in sizes[b].get(side, {})]
        xs = [int(b) for b in ok]
        look = {"label": side, "color": TRAIN_COLORS[side]}
        speed.plot(xs, [sizes[b][side]["tokens_per_s"] for b in ok], "o-", **look)
        memory.plot(xs, [sizes[b][side]["peak_growth_mb"] for b in ok], "o-", **look)
    for ax, title, unit in ((speed, "throughput", "tokens/s"), (memory, "peak growth", "MB")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (records per step)")
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.set_title(f"training: {title}")
        ax.legend()


def _train_long_panels(by_length: Any, by_vocab: Any, long: dict[str, Any]) -> None:
    sweeps = (
        (by_length, long.get("sizes", {}), "sequence length (tokens)",
         f"vocab {long.get('vocab', 0):,}"),
        (by_vocab, long.get("vocab_sweep", {}).get("sizes", {}), "vocabulary",
         f"length {long.get('vocab_sweep', {}).get('length', 0):,}"),
    )  # fmt: skip
    for ax, points, xlabel, held in sweeps:
        keys = sorted(points, key=int)
        for arm, color in TRAIN_COLORS.items():
            ok = [k for k in keys if "peak_growth_mb" in points[k].get(arm, {})]
            xs = [int(k) for k in ok]
            growth = [points[k][arm]["peak_growth_mb"] / 1024 for k in ok]
            rss = [points[k][arm]["peak_rss_mb"] / 1024 for k in ok]
            ax.plot(xs, growth, "o-", color=color, label=f"{arm} growth")
            ax.plot(xs, rss, "o:", color=color, label=f"{arm} peak RSS")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("GiB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"one training step, batch {long.get('batch', 0)}, {held}", fontsize=9)
        ax.legend(fontsize=6)


def chart_export(data: dict[str, Any], out: Path) -> None:
    """Export time per format against model size; latency against sequence length."""
    sizes = data.get("sizes", {})
    if len(sizes) < 2:
        return chart_generic("export", data, out)
    plt, fig, (export_ax, latency_ax) = _figure()
    models = sorted(sizes.values(), key=lambda m: m["parameters"])
    params = [m["parameters"] for m in models]
    for fmt in sorted(models[0]["export_seconds"]):
        export_ax.plot(params, [m["export_seconds"].get(fmt, 0.0) for m in models], "o-", label=fmt)
    for m in models:
        for runtime, style in (("torch", "o-"), ("onnxruntime", "s--")):
            by_length = m["latency_ms"].get(runtime, {})
            lengths = sorted(by_length, key=int)
            latency_ax.plot(
                [int(t) for t in lengths],
                [by_length[t] for t in lengths],
                style,
                label=f"{runtime} hidden {m['hidden']}",
            )
    export_ax.set_xscale("log")
    export_ax.set_xlabel("parameters")
    export_ax.set_ylabel("seconds")
    export_ax.set_title("export time by format")
    latency_ax.set_xscale("log", base=2)
    latency_ax.set_yscale("log")
    latency_ax.set_xlabel("sequence length (tokens)")
    latency_ax.set_ylabel("ms (median, 1 thread)")
    latency_ax.set_title("forward latency")
    for ax in (export_ax, latency_ax):
        ax.legend(fontsize=7)
    _save(plt, fig, out)


def chart_teacher_cache(data: dict[str, Any], out: Path) -> None:
    """Cache bytes per token and the top-k+tail KL against k (the ``by_k`` sweep)."""
    by_k = data.get("by_k", {})
    if len(by_k) < 2:
        return chart_generic("teacher_cache", data, out)
    plt, fig, (size_ax, kl_ax) = _figure()
    ks = sorted(by_k, key=int)
    xs = [int(k) for k in ks]
    size_ax.plot(xs, [by_k[k]["bytes_per_token"] for k in ks], "o-", label="measured")
    size_ax.plot(xs, [4 * x + 8 for x in xs], "k:", label="target 4k + 8")
    kl_ax.plot(xs, [by_k[k]["kl_topk_tail"] for k in ks], "o-", label="top-k + tail")
    kl_ax.plot(xs, [by_k[k]["kl_storage_stored_tail"] for k in ks], "s--", label="storage only")
    size_ax.set_ylabel("bytes per token")
    kl_ax.set_ylabel("KL(teacher || cache), nats per token")
    kl_ax.set_yscale("log")
    for ax, title in ((size_ax, "teacher cache size"), (kl_ax, "what the cache loses")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (top-k kept per position)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    _save(plt, fig, out)


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
    _save(plt, fig, out)


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
    _save(plt, fig, out)


CHARTS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "data": chart_data,
    "losses": chart_losses,
    "train": chart_train,
    "export": chart_export,
    "teacher_cache": chart_teacher_cache,
    "load": chart_load,
}


def draw_charts(results: Path = RESULTS, charts: Path = DOCS_CHARTS) -> list[Path]:
    """Draw one PNG per result group into ``charts``; return the files written."""
    charts.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in benchmark_results(results).items():
        if name in EVIDENCE:
            continue
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
