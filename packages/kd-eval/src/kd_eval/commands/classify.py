"""``kd-eval classify``: accuracy, macro-F1 and confusion matrix over a label set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_eval.commands._common import add_output, finish
from kd_eval.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``classify`` subcommand."""
    parser = subparsers.add_parser(
        "classify", help="classification metrics (accuracy, macro-F1, confusion matrix)"
    )
    parser.add_argument("model", type=Path, help="model directory")
    parser.add_argument("--data", type=Path, required=True, help="JSONL; completion = label")
    parser.add_argument(
        "--labels",
        default="8ball",
        help="a known label set (8ball) or a text file with one label per line",
    )
    parser.add_argument(
        "--mode",
        choices=("likelihood", "generate"),
        default="likelihood",
        help="score each label's log-likelihood (default) or parse greedy generations",
    )
    parser.add_argument(
        "--length-normalize", action="store_true", help="mean instead of summed log-likelihood"
    )
    add_output(parser)
    parser.set_defaults(func=run)


def resolve_labels(spec: str) -> list[str]:
    """Return the labels named by ``spec``: a key of ``LABEL_SETS`` or a file of lines.

    Raises:
        ConfigError: neither a known set nor a readable file.
    """
    from kd_eval.tasks.labels import LABEL_SETS

    if spec in LABEL_SETS:
        return list(LABEL_SETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(
            f"--labels {spec!r} is neither a known label set ({', '.join(LABEL_SETS)}) "
            "nor a file with one label per line"
        )
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(args: argparse.Namespace) -> int:
    """Classify every record, print the metrics, write the report."""
    from kd_eval.loading.data import read_eval_set
    from kd_eval.loading.models import load_model
    from kd_eval.tasks.run import run_classification

    labels = resolve_labels(args.labels)
    records = read_eval_set(args.data)
    section = run_classification(
        load_model(args.model),
        records,
        labels,
        mode=args.mode,
        length_normalize=args.length_normalize,
        progress=not args.no_progress,
    )
    print(
        f"accuracy {section['accuracy']:.4f} (chance {section['chance_accuracy']:.4f}), "
        f"macro-F1 {section['macro_f1']:.4f} over {section['n']} examples"
    )
    finish(args, Path(args.model).name, classification=section)
    return 0
