"""The ``kd-train`` command line: validate data, generate and cache teacher output, distil."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import kd_train
import kd_train.commands
from kd_train.cliutil import build_parser, run


def make_parser() -> argparse.ArgumentParser:
    """Return the ``kd-train`` parser (used by the CLI and by the docs' CLI reference)."""
    return build_parser(
        "kd-train",
        "Distil a teacher language model into a small student.",
        kd_train.commands,
        kd_train.__version__,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kd-train`` with ``argv`` (default: the process arguments); return the exit code."""
    return run(make_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
