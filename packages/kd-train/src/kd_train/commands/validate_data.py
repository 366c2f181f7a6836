"""``kd-train validate-data FILE``: check a KD dataset row by row, strict or with a quarantine.

``--mode strict`` (the default) stops at the first invalid row and exits with status 2,
printing ``FILE:LINE: FIELD: REASON``. ``--mode quarantine`` reads the whole file, writes
each rejected row verbatim to the quarantine file (``--quarantine PATH``, by default
``<stem>.quarantine.jsonl`` next to the input), prints a summary in which
``rows = accepted + quarantined`` and exits with status 0. ``--json`` prints the summary as
JSON instead. An empty file is refused (status 2) in both modes, and so is, as a row, a
record longer than ``--max-record-bytes`` (16 MiB by default), which is never read whole.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kd_train.cliutil import output_file, positive_int
from kd_train.errors import KDTrainError

#: The values of ``--mode``: :data:`kd_train.data.quarantine.MODES` (spelled out so that
#: ``--help`` does not import torch; a test keeps the two equal).
MODE_NAMES = ("strict", "quarantine")


def register(subparsers: Any) -> None:
    """Add the ``validate-data`` subcommand."""
    parser = subparsers.add_parser(
        "validate-data",
        help="check a KD dataset (JSONL); stop at the first error or quarantine bad rows",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the JSONL dataset to check")
    parser.add_argument(
        "--mode",
        choices=MODE_NAMES,
        default="strict",
        help="strict: stop at the first invalid row (exit 2); quarantine: set bad rows aside",
    )
    parser.add_argument(
        "--quarantine",
        type=output_file,
        metavar="PATH",
        help="where rejected rows go in quarantine mode (default: <stem>.quarantine.jsonl)",
    )
    parser.add_argument(
        "--vocab-size",
        type=positive_int,
        metavar="N",
        help="reject teacher_topk ids >= N (the teacher's vocabulary size)",
    )
    parser.add_argument(
        "--max-record-bytes",
        type=positive_int,
        metavar="N",
        default=None,
        help="reject a record (line) longer than N bytes (default 16 MiB)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate ``args.file``; print the summary; return 0 (errors raise in strict mode)."""
    from kd_train.data.quarantine import default_quarantine_path, validate_file

    path: Path = args.file
    if not path.is_file():
        raise KDTrainError(f"{path}: no such file; give the path of a JSONL dataset")
    if args.quarantine is not None and args.mode != "quarantine":
        raise KDTrainError("--quarantine PATH is only used with --mode quarantine; add it")
    quarantine = None
    if args.mode == "quarantine":
        quarantine = args.quarantine or default_quarantine_path(path)
        if quarantine.resolve() == path.resolve():
            raise KDTrainError(f"{quarantine}: the quarantine file must not be the input file")
        if quarantine.is_dir():
            raise KDTrainError(f"{quarantine} is a directory; give --quarantine a file path")
    report = validate_file(
        path,
        mode=args.mode,
        quarantine_path=quarantine,
        vocab_size=args.vocab_size,
        progress=True,
        max_record_bytes=args.max_record_bytes,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0
