"""``kd-convert verify``: check an export directory against its ``contract.json``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``verify`` subcommand."""
    parser = subparsers.add_parser(
        "verify", help="check an export's files and I/O structure against contract.json"
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line when the export holds its contract; a mismatch exits 2 (ContractError)."""
    from kd_convert.contract import verify

    contract = verify(args.out_dir)
    lengths = ",".join(map(str, contract.seq_lengths))
    cache = (
        f", generation with a KV cache of {contract.cache['max_length']}" if contract.cache else ""
    )
    print(
        f"{args.out_dir}: {contract.format} export matches its contract "
        f"({len(contract.files)} files, lengths {lengths}{cache})"
    )
    return 0
