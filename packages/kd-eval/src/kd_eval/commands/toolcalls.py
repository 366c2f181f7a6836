"""``kd-eval toolcalls``: JSON validity, tool-name accuracy, argument F1, fixture hit-rate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_train.cliutil import positive_int

from kd_eval.commands._common import add_output, finish


def register(subparsers: Any) -> None:
    """Add the ``toolcalls`` subcommand."""
    parser = subparsers.add_parser("toolcalls", help="tool-call metrics on generated JSON calls")
    parser.add_argument("model", type=Path, help="model directory")
    parser.add_argument("--data", type=Path, required=True, help="JSONL; completion = tool call")
    parser.add_argument(
        "--fixtures", type=Path, help="recorded tool results (JSON list) to replay calls against"
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=64)
    add_output(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate and score a call per record, print the rates, write the report."""
    from kd_eval.loading.data import read_eval_set
    from kd_eval.loading.models import load_model
    from kd_eval.tasks.fixtures import load_fixtures
    from kd_eval.tasks.run import run_toolcalls

    fixtures = load_fixtures(args.fixtures) if args.fixtures is not None else None
    records = read_eval_set(args.data)
    section = run_toolcalls(
        load_model(args.model),
        records,
        fixtures=fixtures,
        max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress,
    )
    for key in ("json_validity", "tool_name_accuracy", "args_f1_strict", "args_f1_lax"):
        print(f"{key:20s} {section[key]:.4f}")
    if section["fixture_hit_rate"] is not None:
        print(f"{'fixture_hit_rate':20s} {section['fixture_hit_rate']:.4f}")
    finish(args, Path(args.model).name, toolcalls=section)
    return 0
