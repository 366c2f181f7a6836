"""Every ``kd-train`` / ``kd-eval`` / ``kd-convert`` command line of the docs, parsed for real.

:func:`invocations` finds each command line of a markdown page that calls one of the three
programs (``kd-train ...``, ``python -m kd_train.cli ...``), whether or not the page marks it
not run: in shell code blocks (``console``/``bash``/``shell``/``sh``/``text`` or none; in a
block with ``$`` prompts only the prompted lines), with backslash continuations joined, a
trailing comment dropped, and ``&&``, ``;``, ``|`` and redirections split off; and in inline
code spans of the prose. :func:`problems` parses one with the program's real
:class:`argparse.ArgumentParser` (the caller builds it: qa imports none of the packages):

* a code-block line is a whole command: it must parse as the program would parse it
  (unknown flag or subcommand, a missing required argument, a bad choice all fail);
* an inline span is a fragment of prose (``kd-train cache-logits --data FILE``): its
  subcommand and every flag it names must exist.

Abbreviated flags fail too (argparse would accept ``--vocab`` for ``--vocab-size``; a page
should not rely on it). A placeholder stands for any value: an upper-case word (``DIR``,
``OUT_DIR``, ``N``) or a word holding a shell variable or angle brackets (``$OUT/x``,
``<model>``).

>>> page = ["```console", "$ kd-train validate-data a.jsonl " + chr(92), "    --mode quarantine"
...         " > out.txt", "some output", "```"]
>>> [i.argv for i in invocations("x.md", chr(10).join(page))]
[['validate-data', 'a.jsonl', '--mode', 'quarantine']]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Program names, and the modules ``python -m`` runs them as.
PROGRAMS = {"kd-train": "kd_train.cli", "kd-eval": "kd_eval.cli", "kd-convert": "kd_convert.cli"}
SHELL_BLOCKS = {"console", "bash", "shell", "sh", "text", ""}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*\{?([\w-]*)\}?.*$")
INLINE = re.compile(r"``?([^`]+?)``?")
OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>>", "&>", ">&", "2>&1"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.\.\.)?$|\$|<[^>]*>")


@dataclass(frozen=True)
class Invocation:
    """One call of a program on a page: where, which program, its arguments."""

    page: str
    line: int
    program: str
    argv: list[str]
    whole: bool  # a code-block command line (True) or a fragment in prose (False)

    def where(self) -> str:
        """``page:line: program args``."""
        return f"{self.page}:{self.line}: {self.program} {shlex.join(self.argv)}"


def is_placeholder(value: str) -> bool:
    """True for a value that stands for any value (``DIR``, ``$OUT/s``, ``<model>``).

    >>> [is_placeholder(v) for v in ("DIR", "OUT_DIR", "$OUT/s", "<dir>", "runs/s", "8ball")]
    [True, True, True, True, False, False]
    """
    return bool(PLACEHOLDER.search(value))


def _split(command: str) -> list[list[str]]:
    """Shell words of ``command``, one list per simple command (operators, redirections out)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:  # an unbalanced quote: not a command line
        return []
    segments: list[list[str]] = [[]]
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in OPERATORS:
            segments.append([])
        elif word in REDIRECTS or re.fullmatch(r"\d?>+&?\d?|<", word):
            skip = not word.endswith(("&1", "&2"))
        else:
            segments[-1].append(word)
    return [s for s in segments if s]


def calls(command: str) -> Iterator[tuple[str, list[str]]]:
    """Each ``(program, argv)`` that a shell command line runs.

    >>> list(calls("OUT=/tmp/x python -m kd_eval.cli report a.json --out-dir $OUT && ls"))
    [('kd-eval', ['report', 'a.json', '--out-dir', '$OUT'])]
    """
    modules = {module: program for program, module in PROGRAMS.items()}
    for words in _split(command):
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # environment assignments
        if words[:1] and words[0] in PROGRAMS:
            yield words[0], words[1:]
        elif re.fullmatch(r"python3? -m kd_\w+\.cli", " ".join(words[:3])) and words[2] in modules:
            yield modules[words[2]], words[3:]


def _fences(lines: list[str]) -> Iterator[tuple[int, str, list[str]] | tuple[int, str]]:
    """Yield ``(first body line, language, body)`` per code block, ``(number, line)`` else."""
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            yield i + 1, lines[i]
            i += 1
            continue
        mark = fence.group(1)
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(mark)), len(lines)
        )
        braced = lines[i].strip().lstrip("`~ ").startswith("{")
        yield i + 2, "{}" if braced else fence.group(2), lines[i + 1 : end]
        i = end + 1


def _block_commands(first: int, body: list[str]) -> Iterator[tuple[int, str]]:
    """``(line, command)`` of a shell block: prompts honoured, continuations joined."""
    prompted = any(line.lstrip().startswith("$ ") for line in body)
    i = 0
    while i < len(body):
        start, line = i, body[i]
        i += 1
        if prompted and not line.lstrip().startswith("$ "):
            continue
        text = line.lstrip().removeprefix("$ ")
        while text.rstrip().endswith("\\") and i < len(body):
            text = text.rstrip()[:-1] + " " + body[i].strip()
            i += 1
        yield first + start, text


def invocations(page: str, text: str) -> list[Invocation]:
    """Every call of ``kd-train`` / ``kd-eval`` / ``kd-convert`` on a markdown page."""
    out: list[Invocation] = []
    for item in _fences(text.splitlines()):
        if len(item) == 2:
            number, line = item
            for span in INLINE.findall(line):
                out += [Invocation(page, number, p, a, False) for p, a in calls(span)]
            continue
        first, lang, body = item
        if lang.lower() in SHELL_BLOCKS:
            for number, command in _block_commands(first, body):
                out += [Invocation(page, number, p, a, True) for p, a in calls(command)]
    return out


class _Any(list[Any]):
    """Choices that also hold every placeholder."""

    def __contains__(self, value: object) -> bool:
        return (isinstance(value, str) and is_placeholder(value)) or super().__contains__(value)


def _placeholder_type(convert: Any) -> Any:
    def parse(value: str) -> Any:
        return value if is_placeholder(value) else convert(value)

    # argparse names the type in its message ("invalid int value")
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` (and its subparsers) refuse abbreviations and accept placeholders.

    Changes the parser in place (build a fresh one for the docs check) and returns it.
    """
    for each in _parsers(parser):
        each.allow_abbrev = False
        for action in each._actions:
            if action.type is not None and callable(action.type):
                action.type = _placeholder_type(action.type)
            if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
                action.choices = _Any(action.choices)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _names(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Problems of a prose fragment: the subcommand and each flag it names must exist."""
    subs = _subcommands(parser)
    words = list(argv)
    while subs and words and not words[0].startswith("-"):
        if words[0] not in subs:
            if is_placeholder(words[0]):
                return []
            return [f"unknown subcommand {words[0]!r} (choose from {', '.join(subs)})"]
        parser, words = subs[words[0]], words[1:]
        subs = _subcommands(parser)
    known = set(parser._option_string_actions)
    flags = [w.split("=", 1)[0] for w in words if w.startswith("-") and w not in ("-", "--")]
    return [f"unknown flag {flag!r} for {parser.prog!r}" for flag in flags if flag not in known]


def problems(invocation: Invocation, parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with ``invocation`` against ``parser`` (from :func:`strict`); [] if fine."""
    if not invocation.whole:
        return _names(invocation.argv, parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(invocation.argv)
    except SystemExit as stop:
        if stop.code not in (0, None):  # --help and --version exit 0
            lines = err.getvalue().strip().splitlines()
            return [lines[-1] if lines else f"exit {stop.code}"]
    return []
