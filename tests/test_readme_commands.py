"""Every code example shown in README.md and the docs site is exercised or marked.

A command is a line of a ``console``/``bash``/``shell``/``sh`` code block (in a block where
some lines start with ``$ ``, only those lines), or an inline code span that starts with
``nox ``. Each one must be either

* exercised here: ``nox ...`` is run in list mode (``nox -l <same arguments>``), which fails
  on an unknown session and marks each selected one; ``pip install nox`` is what ``.ci/run``
  runs before the README's test command; or
* marked as not run, with the reason: ``<!-- not-run: REASON -->`` on the line before the
  code block (the whole block), or a trailing ``# not-run: REASON`` on the command line.

A new command that is neither fails ``test_every_command_is_exercised_or_marked_not_run``.
Python examples follow the same rule: a ``python``/``py``/``pycon`` block is either a
``{doctest}`` block (run by ``sphinx-build -b doctest``) or marked ``<!-- not-run: REASON -->``.
The convention is documented in docs/qa/index.md.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    "README.md",
    *sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts
    ),
)
PYTHON = {"python", "py", "pycon", "python3"}
SHELLS = {"console", "bash", "shell", "sh"}
FENCE = re.compile(r"^(```+|~~~+)\s*\{?([\w-]*)\}?\s*$")
BLOCK_MARK = re.compile(r"<!--\s*not-run:\s*(?P<why>.*?)\s*-->")
LINE_MARK = re.compile(r"#\s*not-run:\s*(?P<why>.*)$")
INLINE = re.compile(r"`(nox [^`]+)`")


@dataclass(frozen=True)
class Command:
    """One shell command shown in a page."""

    page: str
    line: int
    text: str
    not_run: str | None  # the reason, when marked

    def where(self) -> str:
        """``page:line: command``."""
        return f"{self.page}:{self.line}: {self.text}"


def _strip_comment(line: str) -> tuple[str, str | None]:
    mark = LINE_MARK.search(line)
    why = mark.group("why").strip() if mark else None
    code = line.split(" #", 1)[0].strip() if " #" in line else line.strip()
    return code, why


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, first body line number, body and not-run mark."""

    lang: str
    braced: bool  # ```{name}: a directive (e.g. {doctest}), not a plain code block
    first: int
    body: list[str]
    not_run: str | None


def walk(text: str) -> Iterator[tuple[int, str] | Block]:
    """Yield each line outside code blocks as (number, line), and each code block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            yield i + 1, lines[i]
            i += 1
            continue
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1))),
            len(lines),
        )
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = BLOCK_MARK.search(prev)
        braced = lines[i].lstrip("`~ ").startswith("{")
        why = mark.group("why") if mark else None
        yield Block(fence.group(2), braced, i + 2, lines[i + 1 : end], why)
        i = end + 1


def extract(page: str, text: str) -> list[Command]:
    """Every command of a markdown page, with its not-run reason if it is marked."""
    out: list[Command] = []
    for item in walk(text):
        if not isinstance(item, Block):
            out += [Command(page, item[0], m, None) for m in INLINE.findall(item[1])]
            continue
        if item.lang not in SHELLS:
            continue
        prompted = any(raw.startswith("$ ") for raw in item.body)
        for no, raw in enumerate(item.body, item.first):
            if prompted and not raw.startswith("$ "):
                continue
            code, why = _strip_comment(raw.removeprefix("$ "))
            if code:
                out.append(Command(page, no, code, why if why is not None else item.not_run))
    return out


def python_blocks(page: str, text: str) -> list[Command]:
    """Every plain python code block of a page (its first line), with its not-run reason."""
    return [
        Command(page, b.first - 1, b.body[0].strip() if b.body else "", b.not_run)
        for b in walk(text)
        if isinstance(b, Block) and b.lang in PYTHON and not b.braced
    ]


def test_every_python_example_is_a_doctest_or_marked_not_run() -> None:
    blocks = [b for p in PAGES for b in python_blocks(p, (ROOT / p).read_text(encoding="utf-8"))]
    unmarked = [b.where() for b in blocks if not (b.not_run or "").strip()]
    assert unmarked == [], "make these {doctest} blocks, or mark them <!-- not-run: REASON -->"


def test_a_plain_python_block_is_caught_and_doctest_blocks_are_not() -> None:
    page = (
        "```python\nimport torch\n```\n\n"
        "<!-- not-run: needs a model directory -->\n```python\nload('m/')\n```\n\n"
        "```{doctest}\n>>> 1 + 1\n2\n```\n"
    )
    blocks = python_blocks("x.md", page)
    assert [(b.text, b.not_run) for b in blocks] == [
        ("import torch", None),
        ("load('m/')", "needs a model directory"),
    ]


#: The README's set-up line (a virtualenv for nox: PEP 668 refuses pip on Debian's Python).
SETUP = "python3 -m venv .venv && . .venv/bin/activate"


def exercised(cmd: Command) -> bool:
    """True when a test in this file runs the command (see the module docstring)."""
    return cmd.text.startswith("nox ") or cmd.text in ("pip install nox", SETUP)


def all_commands() -> list[Command]:
    """Every command of every checked page."""
    return [c for p in PAGES for c in extract(p, (ROOT / p).read_text(encoding="utf-8"))]


def test_every_command_is_exercised_or_marked_not_run() -> None:
    commands = all_commands()
    assert commands, "no command found: the extractor or the pages changed"
    unmarked = [c.where() for c in commands if not exercised(c) and c.not_run is None]
    assert unmarked == [], "run these in a test, or mark them <!-- not-run: REASON -->"
    empty = [c.where() for c in commands if c.not_run is not None and not c.not_run.strip()]
    assert empty == [], "a not-run mark needs its reason"


NOX_COMMANDS = sorted({c.text for c in all_commands() if c.text.startswith("nox ")})


@pytest.mark.parametrize("command", NOX_COMMANDS)
def test_nox_command_names_real_sessions(command: str) -> None:
    args = shlex.split(command)[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "nox", "--noxfile", str(ROOT / "noxfile.py"), "-l", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    selected = {line[2:].split(" -> ")[0] for line in proc.stdout.splitlines() if line[:2] == "* "}
    if "-s" in args:
        named = args[args.index("-s") + 1 :]
        named = named[: next((i for i, a in enumerate(named) if a.startswith("-")), len(named))]
        assert set(named) <= selected, f"{command}: not sessions: {set(named) - selected}"


def test_pip_install_nox_is_what_ci_runs() -> None:
    assert "pip install nox" in {c.text for c in all_commands()}
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"pip install .*\bnox\b", ci)
    assert re.search(r"^nox -s ci$", ci, re.M)


def test_the_setup_line_gives_a_pip_of_its_own(tmp_path: Path) -> None:
    assert SETUP in {c.text for c in all_commands()}
    proc = subprocess.run(
        ["bash", "-c", f"{SETUP} && command -v pip"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.stdout.strip() == str(tmp_path / ".venv" / "bin" / "pip"), proc.stderr


def test_a_new_unmarked_command_is_caught_and_a_marked_one_is_not() -> None:
    page = (
        "Run:\n\n```console\n$ rm -rf build\nremoved\n```\n\n"
        "<!-- not-run: needs a GPU -->\n```bash\ntorchrun train.py\n```\n\n"
        "```sh\nkd-train distil  # not-run: downloads a model\n```\n"
    )
    commands = extract("x.md", page)
    assert [(c.text, c.not_run) for c in commands] == [
        ("rm -rf build", None),
        ("torchrun train.py", "needs a GPU"),
        ("kd-train distil", "downloads a model"),
    ]
    assert [c.line for c in commands] == [4, 10, 14]
