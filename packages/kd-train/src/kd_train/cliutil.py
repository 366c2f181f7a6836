"""Command-line plumbing shared by ``kd-train``, ``kd-eval`` and ``kd-convert``.

Each command line is an :mod:`argparse` parser whose subcommands are discovered from a
``commands`` package: every module in it defines ``register(subparsers)``, which adds one
subcommand and sets ``func`` (a callable taking the parsed namespace and returning an exit
code) as its default. Adding a subcommand is adding a module; nothing else changes.

Exit status, the same for the three command lines: **0** done; **1** a check the command
runs failed (``kd-eval bench`` targets or baseline, ``kd-convert export`` parity,
``kd-train generate`` requests that failed after retries); **2** bad input; **3**
``kd-train generate`` stopped at its budget (:data:`EXIT_CODES`). Bad input is any
argument or input file the command cannot use: a usage error (argparse), an error derived
from :class:`~kd_train.errors.KDTrainError`, a file the system refuses to read or write
(:class:`OSError`: missing, a directory where a file is expected, no permission) or bytes
that are not UTF-8. Each is printed as one line on standard error, with no traceback, and
is found before the command writes anything. The argument types below (:func:`finite_float`,
:func:`positive_int`, :func:`output_file`, :func:`output_dir`, ...) refuse the commonest
ones while the command line is parsed.

A command module imports only what its parser needs at the top (argparse, the standard
library, light kd modules); torch, transformers and the modules that import them are
imported inside the function that runs the command, so that ``--help`` and a usage error
answer at once. ``tests/test_cli_startup.py`` keeps it so.

Progress bars are made by :func:`progress_bar`: a tqdm bar on a terminal, periodic plain
lines when standard error is a file or a pipe (a log), nothing when disabled. A command
with a ``--no-progress`` option also switches transformers' own bars ("Loading weights")
off, or to plain lines when standard error is not a terminal.

Known noise from a library is dropped where kd calls that library, with
:func:`drop_log_messages`: one logger, one exact message pattern, only for that call.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import math
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any, NoReturn

from kd_train.errors import KDTrainError

#: Exit status for an input or usage error reported through :class:`~kd_train.errors.KDTrainError`.
EXIT_INPUT_ERROR = 2

#: Every exit status the command lines use, and what it means.
EXIT_CODES = {
    0: "done",
    1: "a check failed (bench targets or baseline, export parity, generate requests)",
    2: "bad input: a usage error or an argument, config value or file the command cannot use",
    3: "kd-train generate stopped at its budget",
}

CommandFunc = Callable[[argparse.Namespace], int]

#: Seconds between two plain progress lines when standard error is not a terminal.
LINE_INTERVAL_S = 10.0

#: The format of a plain progress line, e.g. ``distill:  40% 4/10 [00:02<00:03, 1.9step/s]``.
LINE_FORMAT = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)


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
    parser = OneLineErrorParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules(commands):
        module.register(subparsers)
    return parser


class OneLineErrorParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one line (exit status 2).

    ``PROG: error: MESSAGE (see PROG --help)``; the full usage stays in ``--help``.
    Subcommand parsers are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line on standard error and exit with status 2."""
        self.exit(
            EXIT_INPUT_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n"
        )


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
        no_progress = getattr(args, "no_progress", None)
        with library_progress(None if no_progress is None else not no_progress):
            return func(args)
    except KDTrainError as exc:
        message = str(exc)
    except OSError as exc:  # the system refused a path the user gave
        message = describe_os_error(exc)
    except UnicodeError as exc:
        message = f"an input is not valid UTF-8 text ({exc}); re-encode it as UTF-8"
    print(f"{parser.prog}: error: {one_line(message)}", file=sys.stderr)
    return EXIT_INPUT_ERROR


def one_line(message: str) -> str:
    r"""``message`` on one line: line breaks become ``"; "``.

    >>> from kd_train.cliutil import one_line
    >>> one_line("bad config\n  lr: must be > 0\n")
    'bad config; lr: must be > 0'
    """
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` for an :class:`OSError` about a path, else the error's own text.

    >>> from kd_train.cliutil import describe_os_error
    >>> import errno
    >>> describe_os_error(IsADirectoryError(errno.EISDIR, "Is a directory", "out"))
    'out: Is a directory (a directory where a file is expected)'
    """
    if exc.filename is None or exc.strerror is None:
        return str(exc) or type(exc).__name__
    names = str(exc.filename) + ("" if exc.filename2 is None else f" -> {exc.filename2}")
    return f"{names}: {exc.strerror}{_OS_HINTS.get(exc.errno or 0, '')}"


_OS_HINTS = {
    errno.EISDIR: " (a directory where a file is expected)",
    errno.ENOTDIR: " (a file where a directory is expected)",
    errno.EEXIST: " (a file where a directory is expected, or an output that exists)",
}


def finite_float(text: str) -> float:
    """Argument type: a finite number (``nan`` and ``inf`` are refused).

    >>> from kd_train.cliutil import finite_float
    >>> finite_float("0.5")
    0.5
    >>> finite_float("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a finite number, got 'nan'
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """Argument type: a finite number ``>= 0``."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _int(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """Argument type: an integer ``>= 1``.

    >>> from kd_train.cliutil import positive_int
    >>> positive_int("3")
    3
    """
    return _int(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """Argument type: an integer ``>= 0``."""
    return _int(text, 0, "an integer >= 0")


def output_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be written as a file, or ``None`` when nothing is in the way.

    In the way: a directory at ``path``, or a file where one of its folders should be.

    >>> from kd_train.cliutil import output_file_problem
    >>> output_file_problem("/dev/null/x.json")
    '/dev/null/x.json: /dev/null is a file, not a directory'
    """
    target = Path(path)
    if target.is_dir():
        return f"{path} is a directory; expected the path of a file to write"
    return _ancestor_problem(target)


def _ancestor_problem(path: Path) -> str | None:
    """A file where a folder above ``path`` should be (the nearest existing one is checked)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{path}: {parent} is a file, not a directory"
    return None


def output_file(text: str) -> Path:
    """Argument type: a file to write; refused when a directory is in the way.

    >>> import tempfile
    >>> from kd_train.cliutil import output_file
    >>> output_file(tempfile.gettempdir())
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: ... is a directory; expected the path of a file to write
    """
    problem = output_file_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def output_dir(text: str) -> Path:
    """Argument type: a directory to write into; refused when a file is in the way.

    >>> from kd_train.cliutil import output_dir
    >>> output_dir("/dev/null/run")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: /dev/null/run: /dev/null is a file, not a directory
    """
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a directory")
    problem = _ancestor_problem(path)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return path


def input_file(text: str) -> Path:
    """Argument type: an existing file to read (not a directory)."""
    path = Path(text)
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not found"
        raise argparse.ArgumentTypeError(f"{text} is {what}; expected a file to read")
    return path


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: standard error) is an interactive terminal.

    >>> import io
    >>> from kd_train.cliutil import is_terminal
    >>> is_terminal(io.StringIO())
    False
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    enabled: bool = True,
    file: IO[str] | None = None,
    **options: Any,
) -> Any:
    """A tqdm progress bar fit for where it is shown.

    On a terminal it is an ordinary tqdm bar. When ``file`` (default: standard error) is
    not a terminal, it prints one plain line when it starts, then at most one every
    :data:`LINE_INTERVAL_S` seconds, and a last line when it closes: a log gets a few
    readable lines instead of thousands of carriage-return redraws. ``enabled=False``
    prints nothing.

    Args:
        iterable: what to iterate over, as for ``tqdm(iterable)``.
        enabled: ``False`` for a silent bar (``--no-progress``).
        file: where the bar is written (default: standard error).
        **options: tqdm's other options (``total``, ``desc``, ``unit``, ``initial``, ...).

    Returns:
        A tqdm instance (iterate over it, or call ``update`` and ``close``).

    >>> import io
    >>> from kd_train.cliutil import progress_bar
    >>> out = io.StringIO()
    >>> with progress_bar(total=3, desc="demo", file=out) as bar:
    ...     bar.update(3)
    >>> lines = out.getvalue().splitlines()
    >>> [line.split(" [")[0] for line in lines]
    ['demo:   0% 0/3', 'demo: 100% 3/3']
    >>> chr(13) in out.getvalue()  # no carriage return
    False
    """
    from tqdm import tqdm

    stream = sys.stderr if file is None else file
    if not enabled or is_terminal(stream):
        return tqdm(iterable, disable=not enabled, file=stream, **options)
    options.setdefault("mininterval", LINE_INTERVAL_S)
    options.setdefault("bar_format", LINE_FORMAT)
    return _line_bar_class()(iterable, file=stream, **options)


def _line_bar_class() -> type[Any]:
    from tqdm import tqdm

    class LineBar(tqdm):
        """tqdm that prints whole lines (no carriage returns, no clearing)."""

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            if msg == "":  # tqdm clears the bar this way; a line stays where it is
                return False
            self.fp.write(f"{self if msg is None else msg}\n")
            self.fp.flush()
            return True

        def clear(self, nolock: bool = False) -> None:
            return None

        def close(self) -> None:
            if not self.disable and self.n != getattr(self, "_last_shown", None):
                self.display()  # the final figure, once
            self.leave = False
            super().close()

        # A new postfix or description shows in the next periodic line, not in a line of its own.
        def set_postfix(
            self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any
        ) -> None:
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            super().set_postfix_str(s, refresh=False)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            super().set_description(desc, refresh=False)

        def refresh(self, nolock: bool = False, lock_args: Any = None) -> None:
            self._last_shown = self.n
            super().refresh(nolock=nolock, lock_args=lock_args)

    return LineBar


@contextlib.contextmanager
def drop_log_messages(logger: str, pattern: str) -> Iterator[None]:
    r"""Drop the records of ``logger`` whose whole message matches ``pattern``, inside the block.

    Only records logged by that very logger are looked at (not its children's); every other
    message, ours included, still reaches the handlers.

    Args:
        logger: the library logger's name, e.g. ``"coremltools"``.
        pattern: a regular expression the whole formatted message must match.

    >>> import logging
    >>> from kd_train.cliutil import drop_log_messages
    >>> records = []
    >>> class Keep(logging.Handler):
    ...     def emit(self, record):
    ...         records.append(record.getMessage())
    >>> log = logging.getLogger("demo.noisy")
    >>> log.addHandler(Keep())
    >>> with drop_log_messages("demo.noisy", r"torchvision is not installed\. Skipping \S+"):
    ...     log.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
    ...     log.warning("something else")
    >>> records
    ['something else']
    """
    regex = re.compile(pattern)

    def keep(record: logging.LogRecord) -> bool:
        return regex.fullmatch(record.getMessage()) is None

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


@contextlib.contextmanager
def library_progress(enabled: bool | None) -> Iterator[None]:
    """Make transformers' bars ("Loading weights", ...) follow kd's, inside the block.

    ``False`` (``--no-progress``) switches them off; ``True`` keeps them, as plain lines
    when standard error is not a terminal (:func:`progress_bar`); ``None`` leaves them
    alone. :func:`run` wraps each command with an option ``--no-progress`` in it: only
    those load models, so only they pay for importing transformers here.

    Args:
        enabled: whether bars are shown, or ``None`` for a command without the option.
    """
    if enabled is None:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
        previous = hf_logging.set_tqdm_hook(None)
    else:
        previous = hf_logging.set_tqdm_hook(_hooked_bar)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)
        if was_enabled and not hf_logging.is_progress_bar_enabled():
            hf_logging.enable_progress_bar()


def _hooked_bar(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Route transformers' bars through :func:`progress_bar` (plain lines in a log)."""
    from tqdm import tqdm

    real_bar = isinstance(factory, type) and issubclass(factory, tqdm)
    if not real_bar or len(args) > 1 or kwargs.get("disable") or is_terminal(kwargs.get("file")):
        return factory(*args, **kwargs)
    return progress_bar(*args, **kwargs)
