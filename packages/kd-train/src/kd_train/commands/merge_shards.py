"""``kd-train merge-shards``: join the workers' outputs of a sharded run into one.

``kd-train cache-logits --shard I/N`` (or under ``torchrun``) leaves ``CACHE/worker-I-of-N/``
per worker; ``--cache CACHE`` makes ``CACHE`` one cache whose files are byte-identical to a
single-process run's (:func:`kd_train.shards.merge_cache`). ``kd-train generate --shard
I/N`` leaves ``OUT.worker-I-of-N.jsonl``; ``--dataset OUT --prompts P`` makes ``OUT``
(:func:`kd_train.shards.merge_dataset`). Either refuses a missing, duplicated, unfinished
or mismatched worker output, naming it.

Example::

    kd-train merge-shards --cache cache/
    kd-train merge-shards --dataset run/out.jsonl --prompts prompts.jsonl
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
        help="join the worker outputs of a sharded cache-logits or generate run into one",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--cache", type=Path, help="the cache-logits --out the workers shared")
    what.add_argument("--dataset", type=Path, help="the generate --out the workers shared")
    parser.add_argument(
        "--prompts", type=Path, help="with --dataset: the prompts file the workers read"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Merge, and print a JSON summary of the merged cache or dataset."""
    from kd_train.errors import KDTrainError
    from kd_train.shards import merge_cache, merge_dataset

    if args.dataset is not None:
        if args.prompts is None:
            raise KDTrainError("--dataset needs --prompts: the prompts file the workers read")
        written = merge_dataset(args.dataset, args.prompts)
        print(json.dumps({"out": str(args.dataset), "records": written}))
        return 0
    manifest = merge_cache(args.cache)
    summary = {
        "out": str(args.cache),
        "records": len(manifest.records),
        "shards": len(manifest.shards),
        "positions": manifest.positions,
    }
    print(json.dumps(summary))
    return 0
