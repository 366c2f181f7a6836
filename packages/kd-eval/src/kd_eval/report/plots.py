"""PNG plots for the reports, drawn with matplotlib's Agg renderer (no display needed).

Figures are built with :class:`matplotlib.figure.Figure` directly, not ``pyplot``, so no
global state is touched and nothing needs closing.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def confusion_matrix_png(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    r"""Draw a confusion matrix (rows: reference, columns: prediction) as PNG bytes.

    >>> from kd_eval.report.plots import confusion_matrix_png
    >>> confusion_matrix_png(["a", "b"], [[1, 0], [2, 3]])[:4]
    b'\x89PNG'
    """
    n = len(labels)
    size = max(3.0, 0.45 * n + 1.5)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), labels=labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels=labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if n <= 25:
        for r in range(n):
            for c in range(n):
                if matrix[r][c]:
                    ax.text(c, r, str(matrix[r][c]), ha="center", va="center", fontsize=7)
    return _png(fig)


def distribution_png(
    labels: Sequence[str], reference: dict[str, int], predicted: dict[str, int]
) -> bytes:
    """Draw reference vs. predicted class counts as grouped bars (PNG bytes)."""
    fig = Figure(figsize=(max(4.0, 0.35 * len(labels) + 2), 3.2))
    ax = fig.add_subplot()
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], [reference.get(k, 0) for k in labels], 0.4, label="reference")
    ax.bar([x + 0.2 for x in xs], [predicted.get(k, 0) for k in labels], 0.4, label="predicted")
    ax.set_xticks(list(xs), labels=labels, rotation=90, fontsize=7)
    ax.set_ylabel("examples")
    ax.legend()
    return _png(fig)


def curve_png(curves: dict[str, Any], cost: str) -> bytes:
    """Draw quality against one cost axis, every student a point, the Pareto front a line."""
    points = [p for p in curves["points"] if cost in p["costs"]]
    front = set(curves["fronts"].get(cost, []))
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.scatter([p["costs"][cost] for p in points], [p["quality"] for p in points], color="gray")
    for p in points:
        ax.annotate(
            p["name"],
            (p["costs"][cost], p["quality"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, 4),
        )
    on_front = sorted((p["costs"][cost], p["quality"]) for p in points if p["name"] in front)
    if on_front:
        ax.plot(*zip(*on_front, strict=True), color="tab:red", marker="o", label="Pareto front")
        ax.legend()
    ax.set_xlabel(cost)
    arrow = "higher is better" if curves["higher_is_better"] else "lower is better"
    ax.set_ylabel(f"{curves['quality']} ({arrow})")
    if cost == "parameters":
        ax.set_xscale("log")
    return _png(fig)


def quantization_png(section: dict[str, Any]) -> bytes:
    """Draw the held-out KL of each arm of a ``quantization`` section with its interval.

    With ONNX files measured, two more panels: their weight bytes and onnxruntime latency.
    """
    arms = section["arms"]
    names = list(arms)
    measured = [n for n in names if arms[n]["onnx"] is not None]
    colours = {"fp32": "#4c72b0", "ptq": "#dd8452", "qat": "#55a868"}
    fig = Figure(figsize=(4.5 + (4.5 if measured else 0.0) * 2, 3.6))
    fig.subplots_adjust(wspace=0.4)
    panels = 3 if measured else 1
    ax = fig.add_subplot(1, panels, 1)
    kl = [arms[n]["forward_kl"] for n in names]
    ax.bar(
        names,
        [k["value"] for k in kl],
        yerr=[[k["value"] - k["low"] for k in kl], [k["high"] - k["value"] for k in kl]],
        capsize=4,
        color=[colours.get(n, "gray") for n in names],
    )
    confidence = kl[0]["confidence"]
    ax.set_title(f"held-out KL(teacher || student), {confidence:.0%} CI", fontsize=9)
    ax.set_ylabel("nats / token")
    if measured:
        settings = arms[measured[0]]["onnx"]
        for i, (key, scale, title, unit) in enumerate(
            (
                ("weight_bytes", 1 / 1024, "ONNX weights + scales (initializers)", "KiB"),
                (
                    "latency_ms",
                    1.0,
                    f"onnxruntime, 1 x {settings['length']} tokens, 1 thread",
                    "ms (median)",
                ),
            ),
            start=2,
        ):
            axis = fig.add_subplot(1, panels, i)
            axis.bar(
                measured,
                [arms[n]["onnx"][key] * scale for n in measured],
                color=[colours.get(n, "gray") for n in measured],
            )
            axis.set_title(title, fontsize=9)
            axis.set_ylabel(unit)
    scheme = section["scheme"]
    group = f", group {scheme['group_size']}" if scheme["group_size"] else ""
    fig.suptitle(f"fp32, post-training quantized and QAT students ({scheme['scheme']}{group})")
    return _png(fig)
