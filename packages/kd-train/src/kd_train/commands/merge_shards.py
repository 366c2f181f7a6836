"""``kd-train merge-shards``: join the workers' parts of a sharded cache into one cache.

``kd-train cache-logits --shard I/N`` (or under ``torchrun``) leaves ``CACHE/worker-I-of-N/``
per worker; this makes ``CACHE`` one cache whose files are byte-identical to a
single-process run's, or refuses (:func:`kd_train.shards.merge_cache`).

Example::

    kd-train merge-shards --cache cache/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``merge-shards`` subcommand."""
    parser = subparsers.add_parser(
        "merge-shards",
        help="join the worker outputs of a sharded cache-logits run into one cache",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--cache", required=True, type=Path, help="the --out directory the workers shared"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Merge, and print a JSON summary of the merged cache."""
    from kd_train.shards import merge_cache

    manifest = merge_cache(args.cache)
    summary = {
        "out": str(args.cache),
        "records": len(manifest.records),
        "shards": len(manifest.shards),
        "positions": manifest.positions,
    }
    print(json.dumps(summary))
    return 0
