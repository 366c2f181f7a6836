"""Charts of ``showcase.py``: one learning-curve PNG per arm and a summary of the final figures.

``showcase_<arm>.png``: held-out bits per byte and KL to the teacher against the optimiser
step, each seed thin and their mean thick, CE-only's mean dashed and the teacher's bits per
byte dotted for reference. ``showcase.png``: the final figures of every arm with their 95%
bootstrap intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evidence_on_policy import interval_bars  # on sys.path: showcase.py's directory

PANELS = (("bpb", "held-out bits per byte"), ("kl", "held-out KL(teacher || student), nats"))


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_arm(arm: str, result: dict[str, Any], path: Path) -> None:
    """The learning curves of ``arm`` (seeds and their mean) against CE-only's mean."""
    plt = pyplot()
    entry, ce = result["arms"][arm], result["arms"]["ce"]["curve"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (metric, label) in zip(axes, PANELS, strict=True):
        for seed, curve in enumerate(entry["curves"]):
            steps = [p["step"] for p in curve]
            ax.plot(
                steps,
                [p[metric] for p in curve],
                color="#4c72b0",
                alpha=0.35,
                lw=1,
                label="seeds" if seed == 0 else None,
            )
        mean = entry["curve"]
        ax.plot(
            [p["step"] for p in mean],
            [p[metric] for p in mean],
            color="#4c72b0",
            lw=2.5,
            marker="o",
            label=f"{arm} (mean)",
        )
        if arm != "ce":
            ax.plot(
                [p["step"] for p in ce],
                [p[metric] for p in ce],
                color="#dd8452",
                ls="--",
                lw=2,
                label="ce (mean)",
            )
        if metric == "bpb":
            ax.axhline(result["teacher"]["bpb"]["value"], color="grey", ls=":", label="teacher")
        ax.set(xlabel="optimiser step", title=label)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{arm}: {result['seeds']} seeds, {result['steps']} steps, "
        f"{result['data']['heldout_records']} held-out sentences"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_summary(result: dict[str, Any], path: Path) -> None:
    """Bars of every arm's final figures, with their 95% bootstrap intervals across examples."""
    plt = pyplot()
    arms = result["arms"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, metric, label in zip(
        axes,
        ("bpb", "kl", "top1"),
        ("bits per byte (lower is better)", "KL to teacher (lower)", "top-1 agreement (higher)"),
        strict=True,
    ):
        interval_bars(ax, arms, metric)
        ax.tick_params(axis="x", labelrotation=30)
        ax.set(title=label)
    fig.suptitle("held-out figures after training, 95% bootstrap intervals across sentences")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_all(result: dict[str, Any], directory: Path) -> None:
    """``showcase.png`` and one ``showcase_<arm>.png`` per arm under ``directory``."""
    plot_summary(result, directory / "showcase.png")
    for arm in result["arms"]:
        plot_arm(arm, result, directory / f"showcase_{arm}.png")
