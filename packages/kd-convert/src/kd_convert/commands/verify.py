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
    parser.add_argument(
        "--trust-artifact",
        action="store_true",
        help="read a TorchScript or torch.export archive, which unpickles it: unpickling runs "
        "any code its author put in it, so pass this only for an export you made or got from "
        "someone you trust (without it, such an export is refused after its hashes are checked)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line when the export holds its contract; a mismatch exits 2 (ContractError).

    A pickled format without ``--trust-artifact`` exits 2 too (UntrustedArtifactError).
    """
    from kd_convert.contract import verify

    contract = verify(args.out_dir, trust_artifact=args.trust_artifact)
    lengths = ",".join(map(str, contract.seq_lengths))
    cache = (
        f", generation with a KV cache of {contract.cache['max_length']}" if contract.cache else ""
    )
    print(
        f"{args.out_dir}: {contract.format} export matches its contract "
        f"({len(contract.files)} files, lengths {lengths}{cache})"
    )
    return 0
