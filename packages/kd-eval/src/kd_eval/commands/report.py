"""``kd-eval report``: combine the results of a run into one JSON and one HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_train.cliutil import output_dir


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report", help="merge fidelity, task, bench and curves results into JSON + HTML"
    )
    parser.add_argument("inputs", type=Path, nargs="+", help="reports written by kd-eval commands")
    parser.add_argument(
        "--out-dir", type=output_dir, required=True, help="writes report.json/.html"
    )
    parser.add_argument("--name", help="name of the run (default: the first input's)")
    parser.add_argument(
        "--before",
        type=Path,
        nargs="+",
        metavar="REPORT",
        help="the same evaluations before distillation: the page shows each figure before "
        "and after",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Merge, validate, write ``report.json`` and ``report.html`` atomically."""
    from kd_eval.report.document import merge_reports, read_report, with_before, write_report
    from kd_eval.report.html import write_html

    report = merge_reports([read_report(p) for p in args.inputs], args.name)
    if args.before:
        report = with_before(report, merge_reports([read_report(p) for p in args.before]))
    json_path = write_report(args.out_dir / "report.json", report)
    html_path = write_html(args.out_dir / "report.html", report)
    print(f"wrote {json_path} and {html_path}")
    return 0
