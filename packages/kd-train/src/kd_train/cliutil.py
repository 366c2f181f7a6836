"""Command-line plumbing shared by ``kd-train``, ``kd-eval`` and ``kd-convert``.

Each command line is an :mod:`argparse` parser whose subcommands are discovered from a
``commands`` package: every module in it defines ``register(subparsers)``, which adds one
subcommand and sets ``func`` (a callable taking the parsed namespace and returning an exit
code) as its default. Adding a subcommand is adding a module; nothing else changes.

Errors derived from :class:`~kd_train.errors.KDTrainError` are printed as one line on
standard error and the process exits with status 2; there is no traceback for an input
problem.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from kd_train.errors import KDTrainError

#: Exit status for an input or usage error reported through :class:`~kd_train.errors.KDTrainError`.
EXIT_INPUT_ERROR = 2

CommandFunc = Callable[[argparse.Namespace], int]


def build_parser(
    prog: str, description: str, commands: ModuleType, version: str
) -> argparse.ArgumentParser:
    """Build a parser whose subcommands are the modules of ``commands``.

    Args:
        prog: the program name shown in usage lines, e.g. ``"kd-train"``.
        description: one paragraph shown by ``--help``.
        commands: a package; each of its modules defines ``register(subparsers)``.
        version: printed by ``--version``.

    Returns:
        The parser, with one subparser per command module, in module-name order.

    >>> import kd_train.commands
    >>> from kd_train.cliutil import build_parser
    >>> parser = build_parser("kd-train", "demo", kd_train.commands, "0.1.0")
    >>> parser.prog
    'kd-train'
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules(commands):
        module.register(subparsers)
    return parser


def _command_modules(commands: ModuleType) -> list[ModuleType]:
    names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    return [
        importlib.import_module(f"{commands.__name__}.{name}")
        for name in names
        if not name.startswith("_")
    ]


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand.

    Returns the subcommand's exit code, or :data:`EXIT_INPUT_ERROR` after printing the
    message of a :class:`~kd_train.errors.KDTrainError` to standard error.
    """
    args = parser.parse_args(argv)
    func: CommandFunc = args.func
    try:
        return func(args)
    except KDTrainError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
