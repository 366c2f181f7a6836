"""``kd-train version``: print the versions of the kd packages and of the libraries they use."""

from __future__ import annotations

import argparse
import json
from typing import Any

from kd_train.provenance import installed_versions


def register(subparsers: Any) -> None:
    """Add the ``version`` subcommand."""
    parser = subparsers.add_parser("version", help="print installed versions as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print a JSON object mapping distribution name to installed version."""
    print(json.dumps(installed_versions(), indent=2, sort_keys=True))
    return 0
