"""Helpers shared by the subcommands (a leading underscore keeps this out of the CLI)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kd_train.cliutil import finite_float, non_negative_int, output_file, positive_int


def add_output(parser: argparse.ArgumentParser) -> None:
    """Add ``--out`` (report JSON) and ``--name`` options."""
    parser.add_argument(
        "--out", type=output_file, help="write the result as a kd-eval report (JSON) to this file"
    )
    parser.add_argument("--name", help="name of the run in the report (default: the model's)")
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show progress bars on stderr"
    )


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    """Add ``--resamples``, ``--seed`` and ``--confidence`` of the bootstrap intervals."""
    from kd_eval.stats.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED

    parser.add_argument("--resamples", type=positive_int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED)
    parser.add_argument("--confidence", type=finite_float, default=DEFAULT_CONFIDENCE)


def finish(args: argparse.Namespace, default_name: str, **sections: Any) -> dict[str, Any]:
    """Build the report of ``sections``, write it to ``--out`` if given, and return it."""
    from kd_eval.report.document import new_report, write_report

    report = new_report(args.name or default_name, **sections)
    if args.out is not None:
        write_report(args.out, report)
        print(f"wrote {args.out}", file=sys.stderr)
    return report


def fmt_estimate(name: str, est: dict[str, Any]) -> str:
    """One line: ``name value [low, high]``."""
    return f"{name:20s} {est['value']:.4f}  [{est['low']:.4f}, {est['high']:.4f}]"


def print_aggregate(what: str, aggregate: dict[str, Any]) -> None:
    """Print ``what``, the bootstrap settings of ``aggregate``, then one line per estimate.

    ``aggregate`` maps names to :class:`~kd_eval.stats.bootstrap.Estimate` objects, all made
    with the same resamples, seed and confidence.
    """
    est = next(iter(aggregate.values()))
    print(
        f"{what}; {est.confidence:.0%} bootstrap intervals "
        f"({est.resamples} resamples, seed {est.seed})"
    )
    for name, estimate in aggregate.items():
        print(fmt_estimate(name, estimate.to_dict()))
