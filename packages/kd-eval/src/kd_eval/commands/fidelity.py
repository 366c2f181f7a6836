"""``kd-eval fidelity``: teacher-student KL, agreement, overlap and perplexity on a held-out set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_train.cliutil import positive_int

from kd_eval.commands._common import add_bootstrap, add_output, finish, print_aggregate


def register(subparsers: Any) -> None:
    """Add the ``fidelity`` subcommand."""
    parser = subparsers.add_parser(
        "fidelity", help="teacher-student KL, top-1 agreement, top-k overlap, perplexity"
    )
    parser.add_argument(
        "--teacher", type=Path, required=True, help="teacher model directory or .gguf file"
    )
    parser.add_argument("--student", type=Path, required=True, help="student model directory")
    parser.add_argument("--data", type=Path, required=True, help="held-out JSONL of KD records")
    parser.add_argument("--top-k", type=positive_int, default=5, help="k of the top-k overlap (5)")
    add_bootstrap(parser)
    add_output(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the aggregates with their intervals, write the report."""
    from kd_eval.fidelity.run import evaluate_fidelity
    from kd_eval.loading.data import read_eval_set
    from kd_eval.loading.models import load_model

    records = read_eval_set(args.data)
    teacher = load_model(args.teacher)
    student = load_model(args.student)
    result = evaluate_fidelity(
        teacher,
        student,
        records,
        k=args.top_k,
        resamples=args.resamples,
        seed=args.seed,
        confidence=args.confidence,
        progress=not args.no_progress,
    )
    print_aggregate(f"{len(records)} examples", result.aggregate)
    finish(args, Path(args.student).name, fidelity=result.to_dict())
    return 0
