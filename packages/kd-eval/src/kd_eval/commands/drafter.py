"""``kd-eval drafter``: the student as its teacher's speculative drafter (acceptance, speedup)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_train.cliutil import positive_int

from kd_eval.commands._common import add_bootstrap, add_output, finish, print_aggregate


def register(subparsers: Any) -> None:
    """Add the ``drafter`` subcommand."""
    parser = subparsers.add_parser(
        "drafter",
        help="acceptance rate, tokens per teacher forward and speedup of the student as drafter",
    )
    parser.add_argument(
        "--teacher", type=Path, required=True, help="teacher model directory or .gguf file"
    )
    parser.add_argument("--student", type=Path, required=True, help="student model directory")
    parser.add_argument("--data", type=Path, required=True, help="held-out JSONL of KD records")
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=32, help="new tokens per prompt, greedy (32)"
    )
    parser.add_argument(
        "--draft-tokens",
        type=positive_int,
        default=5,
        help="tokens the student drafts per round (5)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="timed runs per prompt; the fastest is kept (1)",
    )
    add_bootstrap(parser)
    add_output(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate with and without the drafter, print the figures with intervals, write them."""
    from kd_eval.drafter.run import evaluate_drafter
    from kd_eval.loading.data import read_eval_set
    from kd_eval.loading.models import load_model

    records = read_eval_set(args.data)
    result = evaluate_drafter(
        load_model(args.teacher),
        load_model(args.student),
        records,
        max_new_tokens=args.max_new_tokens,
        draft_tokens=args.draft_tokens,
        repeats=args.repeats,
        resamples=args.resamples,
        seed=args.seed,
        confidence=args.confidence,
        progress=not args.no_progress,
    )
    print_aggregate(
        f"{len(records)} prompts, up to {args.max_new_tokens} new tokens, "
        f"drafts of {args.draft_tokens}",
        result.aggregate,
    )
    print(f"greedy outputs identical to the teacher alone: {result.n_identical}/{len(records)}")
    finish(args, Path(args.student).name, drafter=result.to_dict())
    return 0
