r"""What a pull request changed, for ``--quick``: the changed lines of each file.

``git diff -U0 BASE`` (the working tree against the base) gives the new side of every hunk;
a file git does not track yet counts as changed on every line. A pure deletion marks the
lines on either side of where the text was.

>>> sorted(hunk_lines("@@ -3,2 +3,3 @@ x\n+a\n@@ -9 +10,0 @@\n"))
[3, 4, 5, 10, 11]
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

_FILE = re.compile(r"^\+\+\+ b/(.+)$")
_HUNK = re.compile(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@")

#: Every line of a file (a new file, untracked): matched by any line number.
ALL_LINES = frozenset({0})


def hunk_lines(diff: str) -> set[int]:
    """The new-side line numbers touched by the hunks of one file's ``-U0`` diff."""
    out: set[int] = set()
    for line in diff.splitlines():
        if m := _HUNK.match(line):
            start, count = int(m.group(1)), int(m.group(2) or "1")
            out.update(range(start, start + count) if count else (start, start + 1))
    return out


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"qa.mutation: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def changed_lines(
    base: str, root: Path, paths: Iterable[str] = ("packages",)
) -> dict[str, set[int]]:
    """``{path: changed line numbers}`` between ``base`` and the working tree.

    Deleted files are listed with no lines (their tests changed, say); untracked files with
    :data:`ALL_LINES`.
    """
    out: dict[str, set[int]] = {}
    current = ""
    chunks: dict[str, list[str]] = {}
    for line in _git(root, "diff", "-U0", "--no-color", base, "--", *paths).splitlines():
        if line.startswith("diff --git "):
            current = line.split(" b/", 1)[-1]
            chunks.setdefault(current, [])
        elif m := _FILE.match(line):
            current = m.group(1)
            chunks.setdefault(current, [])
        elif current:
            chunks[current].append(line)
    for path, lines in chunks.items():
        out[path] = hunk_lines("\n".join(lines))
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *paths)
    for path in untracked.split():
        out[path] = set(ALL_LINES)
    return out


def touches(lines: set[int], first: int, last: int) -> bool:
    """True when a mutant on lines ``first..last`` meets a changed line.

    >>> touches({4}, 3, 5), touches({9}, 3, 5), touches(set(ALL_LINES), 3, 5)
    (True, False, True)
    """
    return bool(lines & ALL_LINES) or any(first <= n <= last for n in lines)


def tests_changed(changed: Iterable[str], tests: Iterable[str]) -> list[str]:
    """The changed files that belong to a module's tests.

    A test entry is a file or a folder; the ``conftest.py`` files above it (up to the root)
    are part of its tests too.

    >>> tests_changed(["packages/p/tests/conftest.py", "packages/p/src/x.py"],
    ...               ["packages/p/tests/data/test_v.py"])
    ['packages/p/tests/conftest.py']
    """
    owned: list[str] = []
    for t in tests:
        owned.append(t)
        for parent in Path(t).parents:
            owned.append((parent / "conftest.py").as_posix().removeprefix("./"))
    out = []
    for path in changed:
        if any(path == o or path.startswith(o.rstrip("/") + "/") for o in owned):
            out.append(path)
    return sorted(out)
