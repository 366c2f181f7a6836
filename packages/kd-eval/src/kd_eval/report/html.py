"""Render a report as one self-contained HTML page.

Plots are PNGs embedded as ``data:image/png;base64`` URIs, the style sheet is inline, there
is no script and no external resource: the file can be mailed or archived as is. Every
piece of text from the report goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kd_train.atomic import atomic_write_text

from kd_eval.report.document import SECTIONS, headline_figures
from kd_eval.report.plots import (
    confusion_matrix_png,
    curve_png,
    distribution_png,
    quantization_png,
)

#: How many per-example rows a section shows (the JSON has them all).
MAX_EXAMPLE_ROWS = 50

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:0.9em}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.pass{color:#07641f;font-weight:bold} .fail{color:#a30000;font-weight:bold}
img{max-width:100%;margin:0.5em 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    head = "".join(
        f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="l">{_e(c)}</td>' if i < left else f"<td>{_num(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _verdict(passed: bool, yes: str = "pass", no: str = "FAIL") -> str:
    return f'<span class="{"pass" if passed else "fail"}">{yes if passed else no}</span>'


def _fidelity(section: dict[str, Any]) -> str:
    agg = section["aggregate"]
    est = next(iter(agg.values()))
    rows = [(name, e["value"], e["low"], e["high"]) for name, e in agg.items()]
    examples = [
        (
            r["id"],
            r["n_tokens"],
            r.get("forward_kl"),
            r.get("top1_agreement"),
            r.get("topk_overlap"),
        )
        for r in section["examples"][:MAX_EXAMPLE_ROWS]
    ]
    return (
        f"<h2>Fidelity</h2><p>Teacher <code>{_e(section['teacher'])}</code>, student "
        f"<code>{_e(section['student'])}</code>: {section['n_examples']} examples, "
        f"{section['n_tokens']} completion tokens, top-{section['k']} overlap. Intervals: "
        f"{est['confidence']:.0%} percentile bootstrap over examples, {est['resamples']} "
        f"resamples, seed {est['seed']}.</p>"
        + _table(["metric", "value", "low", "high"], rows)
        + "<h3>Per example</h3>"
        + _table(["id", "tokens", "forward KL", "top-1 agreement", "top-k overlap"], examples)
    )


def _drafter(section: dict[str, Any]) -> str:
    agg = section["aggregate"]
    est = next(iter(agg.values()))
    rows = [(name, e["value"], e["low"], e["high"]) for name, e in agg.items()]
    settings = section["settings"]
    return (
        f"<h2>Drafter</h2><p>Teacher <code>{_e(section['teacher'])}</code> with student "
        f"<code>{_e(section['student'])}</code> drafting {settings['draft_tokens']} tokens per "
        f"round, greedy, up to {settings['max_new_tokens']} new tokens, on "
        f"{section['n_examples']} prompts; outputs identical to the teacher alone: "
        f"{section['n_identical']}/{section['n_examples']}. Intervals: {est['confidence']:.0%} "
        f"percentile bootstrap over prompts, {est['resamples']} resamples, seed "
        f"{est['seed']}.</p>" + _table(["figure", "value", "low", "high"], rows)
    )


def _interval(est: dict[str, Any] | None) -> str:
    if est is None:
        return "-"
    return f"{est['value']:.4g} [{est['low']:.4g}, {est['high']:.4g}]"


def _quantization(section: dict[str, Any]) -> str:
    scheme = section["scheme"]
    rows = []
    for name, arm in section["arms"].items():
        task = arm["task"] or {}
        onnx = arm["onnx"] or {}
        rows.append(
            (
                name,
                _interval(arm["forward_kl"]),
                _interval(arm["top1_agreement"]),
                _interval(arm["kl_vs_fp32"]),
                task.get("accuracy", task.get("tool_name_accuracy", "-")),
                onnx.get("weight_bytes", "-"),
                onnx.get("file_bytes", "-"),
                onnx.get("latency_ms", "-"),
            )
        )
    recovered = [
        (metric, "-" if r["value"] is None else r["value"], r["reason"] or "")
        for metric, r in section["recovered"].items()
    ]
    headers = ["arm", "forward KL", "top-1", "KL - fp32 (paired)", "task", "weight bytes",
               "file bytes", "ms"]  # fmt: skip
    return (
        f"<h2>Quantization</h2><p>Scheme {_e(scheme['scheme'])} (group size "
        f"{_e(scheme['group_size'])}, from {_e(scheme['source'])}); teacher "
        f"<code>{_e(section['teacher'])}</code>, {section['n_examples']} held-out records.</p>"
        + _table(headers, rows, left=4)
        + _table(["recovered", "value", "reason"], recovered)
        + _img(quantization_png(section), "KL per arm with intervals, ONNX size and latency")
    )


def _classification(section: dict[str, Any]) -> str:
    labels = section["labels"]
    rows = [
        ("accuracy", section["accuracy"]),
        ("macro-F1", section["macro_f1"]),
        ("chance accuracy", section["chance_accuracy"]),
        ("examples", section["n"]),
    ]
    return (
        f"<h2>Classification</h2><p>Model <code>{_e(section['model'])}</code>, mode "
        f"{_e(section['mode'])}.</p>"
        + _table(["metric", "value"], rows)
        + _img(confusion_matrix_png(labels, section["confusion"]), "confusion matrix")
        + _img(
            distribution_png(
                labels, section["reference_distribution"], section["prediction_distribution"]
            ),
            "class distribution: reference vs predicted",
        )
    )


def _toolcalls(section: dict[str, Any]) -> str:
    keys = (
        "json_validity",
        "tool_name_accuracy",
        "args_f1_strict",
        "args_f1_lax",
        "fixture_hit_rate",
        "n",
    )
    examples = [
        (r["id"], r["output"], r["valid_json"], r["name_correct"], r["args_f1_strict"])
        for r in section["examples"][:MAX_EXAMPLE_ROWS]
    ]
    return (
        f"<h2>Tool calls</h2><p>Model <code>{_e(section['model'])}</code>.</p>"
        + _table(["metric", "value"], [(k, section[k]) for k in keys])
        + _table(["id", "output", "valid JSON", "name", "args F1 strict"], examples, left=2)
    )


def _bench(section: dict[str, Any]) -> str:
    s = section["settings"]
    rows = [
        (
            f"S={c['seq_len']} B={c['batch_size']}",
            c["latency_ms"]["p50"],
            c["latency_ms"]["p95"],
            c["latency_ms"]["p99"],
            c["ttft_ms"]["p50"],
            c["prefill_tokens_per_s"],
            c["decode_tokens_per_s"],
            c["peak_rss_delta_mb"],
            c["latency_ms"]["n"],
        )
        for c in section["configs"]
    ]
    return (
        f"<h2>Benchmark</h2><p><code>{_e(section['model'])}</code> ({_e(section['kind'])}): "
        f"{s['warmup']} warm-up + {s['repeats']} timed requests per configuration, "
        f"{s['new_tokens']} new tokens each. Memory: {_e(section['memory_method'])}.</p>"
        + _table(
            [
                "config",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "TTFT p50 ms",
                "prefill tok/s",
                "decode tok/s",
                "peak RSS Δ MiB",
                "n",
            ],
            rows,
        )
    )


def _targets(rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f'<tr><td class="l">{_e(r["role"])}</td><td class="l">{_e(r["limit"])}</td>'
        f"<td>{_num(r['threshold'])}</td><td>{_num(r['value'])}</td>"
        f"<td>{_verdict(r['passed'])}</td></tr>"
        for r in rows
    )
    head = "<tr><th class='l'>role</th><th class='l'>limit</th><th>threshold</th>"
    return f"<h2>Targets</h2><table>{head}<th>value</th><th>result</th></tr>{body}</table>"


def _baseline(rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f'<tr><td class="l">S={r["seq_len"]} B={r["batch_size"]}</td>'
        f'<td class="l">{_e(r["metric"])}</td><td>{_num(r["baseline"])}</td>'
        f"<td>{_num(r['current'])}</td><td>{_num(r['ratio'])}</td>"
        f"<td>{_verdict(not r['regressed'], 'ok', 'REGRESSED')}</td></tr>"
        for r in rows
    )
    head = "<tr><th class='l'>config</th><th class='l'>metric</th><th>baseline</th>"
    tol = rows[0]["tolerance"] if rows else 0.0
    return (
        f"<h2>Against the baseline</h2><p>Tolerance {tol:.0%}.</p><table>{head}"
        f"<th>current</th><th>ratio</th><th>result</th></tr>{body}</table>"
    )


def _curves(section: dict[str, Any]) -> str:
    parts = [f"<h2>Efficiency curves</h2><p>Quality: {_e(section['quality'])}.</p>"]
    for cost in section["fronts"]:
        parts.append(_img(curve_png(section, cost), f"{section['quality']} against {cost}"))
    rows = [
        (p["name"], p["quality"], *(p["costs"].get(c) for c in section["fronts"]))
        for p in section["points"]
    ]
    parts.append(_table(["student", section["quality"], *section["fronts"]], rows))
    return "".join(parts)


_RENDER: dict[str, Callable[[Any], str]] = {
    "fidelity": _fidelity,
    "classification": _classification,
    "toolcalls": _toolcalls,
    "bench": _bench,
    "targets": _targets,
    "baseline_comparison": _baseline,
    "curves": _curves,
    "drafter": _drafter,
    "quantization": _quantization,
}


def _before_after(report: dict[str, Any]) -> str:
    """One row per headline figure: before, after and the change (after - before)."""
    before = report["before"]
    rows = []
    for section in SECTIONS:
        old = headline_figures(section, before.get(section))
        new = headline_figures(section, report.get(section))
        for figure in [*new, *(name for name in old if name not in new)]:
            was, now = old.get(figure), new.get(figure)
            change = (
                now - was if isinstance(was, float | int) and isinstance(now, float | int) else ""
            )
            rows.append(
                (section, figure, "-" if was is None else was, "-" if now is None else now, change)
            )
    return (
        f"<h2>Before and after</h2><p>Before: <code>{_e(before['name'])}</code> (the same "
        f"evaluations of the untrained student); after: <code>{_e(report['name'])}</code>. "
        "The sections below show the after run in full.</p>"
        + _table(["section", "figure", "before", "after", "change"], rows, left=2)
    )


def render_html(report: dict[str, Any]) -> str:
    """Return the HTML page of ``report`` (a validated report document)."""
    body = [
        f"<h1>kd-eval report: {_e(report['name'])}</h1>"
        f"<p>Written {_e(report['created'])} by kd-eval {_e(report['kd_eval_version'])}.</p>"
    ]
    if report.get("before") is not None:
        body.append(_before_after(report))
    for section, render in _RENDER.items():
        if report.get(section) is not None:
            body.append(render(report[section]))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>kd-eval report: {_e(report['name'])}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_html(path: str | Path, report: dict[str, Any]) -> Path:
    """Render ``report`` and write it to ``path`` atomically."""
    atomic_write_text(path, render_html(report))
    return Path(path)
