"""``kd-eval curves``: quality against cost for several students, PNGs and the Pareto front."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_train.atomic import atomic_write_bytes
from kd_train.cliutil import output_dir

from kd_eval.commands._common import add_output, finish
from kd_eval.curves import QUALITIES, curves_section


def register(subparsers: Any) -> None:
    """Add the ``curves`` subcommand."""
    parser = subparsers.add_parser(
        "curves", help="efficiency curves (quality vs parameters, latency, memory) + Pareto front"
    )
    parser.add_argument("reports", type=Path, nargs="+", help="one kd-eval report per student")
    parser.add_argument("--quality", choices=sorted(QUALITIES), default="forward_kl")
    parser.add_argument("--png-dir", type=output_dir, help="write curves-<cost>.png here")
    add_output(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the reports, compute the fronts, write the PNGs and the report."""
    from kd_eval.report.document import read_report
    from kd_eval.report.plots import curve_png

    section = curves_section([read_report(p) for p in args.reports], args.quality)
    for cost, names in section["fronts"].items():
        print(f"Pareto front on {cost}: {', '.join(names)}")
        if args.png_dir is not None:
            atomic_write_bytes(args.png_dir / f"curves-{cost}.png", curve_png(section, cost))
    finish(args, "curves", curves=section)
    return 0
