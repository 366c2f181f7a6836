"""The ``kd-eval`` command line: fidelity, task metrics, benchmarks, reports."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from kd_train.cliutil import build_parser, run

import kd_eval
import kd_eval.commands


def make_parser() -> argparse.ArgumentParser:
    """Return the ``kd-eval`` parser (used by the CLI and by the docs' CLI reference)."""
    return build_parser(
        "kd-eval",
        "Evaluate a distilled student against its teacher and its targets.",
        kd_eval.commands,
        kd_eval.__version__,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kd-eval`` with ``argv`` (default: the process arguments); return the exit code."""
    return run(make_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
