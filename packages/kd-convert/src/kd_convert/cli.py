"""The ``kd-convert`` command line: export, verify, parity."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from kd_train.cliutil import build_parser, run

import kd_convert
import kd_convert.commands


def make_parser() -> argparse.ArgumentParser:
    """Return the ``kd-convert`` parser (used by the CLI and by the docs' CLI reference)."""
    return build_parser(
        "kd-convert",
        "Export a distilled student for a device and prove the export matches it.",
        kd_convert.commands,
        kd_convert.__version__,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kd-convert`` with ``argv`` (default: the process arguments); return the exit code."""
    return run(make_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
