"""``kd-train schema {run,loss,generate}``: print the JSON Schema of a config.

Point an editor at it to complete and check a config file, e.g. ``kd-train schema run >
run.schema.json`` and ``# yaml-language-server: $schema=run.schema.json`` as the first line
of ``run.yaml``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

#: The configs ``schema`` prints: the keys of :data:`kd_train.schemas.CONFIGS` (spelled out
#: so that ``--help`` does not import the config models; a test keeps the two equal).
CONFIG_NAMES = ("run", "loss", "generate")


def register(subparsers: Any) -> None:
    """Add the ``schema`` subcommand."""
    parser = subparsers.add_parser("schema", help="print the JSON Schema of a config")
    parser.add_argument(
        "config",
        choices=CONFIG_NAMES,
        help="run: kd-train distill's run config; loss: its loss table; generate: kd-train "
        "generate's config",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the schema of ``args.config`` as indented JSON."""
    from kd_train.schemas import config_schema

    print(json.dumps(config_schema(args.config), indent=2))
    return 0
