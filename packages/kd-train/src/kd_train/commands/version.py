"""``kd-train version``: print the versions of the kd packages and of the libraries they use."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from typing import Any

#: The distributions whose versions ``version`` reports, when they are installed.
REPORTED = ("kd-train", "kd-eval", "kd-convert", "torch", "transformers", "tokenizers")


def register(subparsers: Any) -> None:
    """Add the ``version`` subcommand."""
    parser = subparsers.add_parser("version", help="print installed versions as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print a JSON object mapping distribution name to installed version."""
    print(json.dumps(installed_versions(), indent=2, sort_keys=True))
    return 0


def installed_versions() -> dict[str, str]:
    """Return the installed version of each distribution in :data:`REPORTED`.

    >>> from kd_train.commands.version import installed_versions
    >>> "kd-train" in installed_versions()
    True
    """
    found = {}
    for dist in REPORTED:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
