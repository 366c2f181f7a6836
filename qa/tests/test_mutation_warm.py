"""The warm engine end to end on a toy repository (``python -m qa.mutation --root ...``).

Each test plants a fault the gate must catch: a weak test that lets mutants live, and a
pull request that only weakens a critical module's tests (the quick run must rerun the
whole module and fail). ``slow``: each run imports torch once (~10-20 s on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from qa import gates
from qa.mutation import stryker

TOY = """\
STRICT = True


def add(a, b):
    return a + b


def is_positive(x):
    return x > 0


def check(x):
    if STRICT and x < 0:
        raise ValueError("negative")
    return x
"""

STRONG_TESTS = """\
import pytest

from kd_toy.m import add, check, is_positive


def test_add():
    assert add(2, 3) == 5


def test_is_positive():
    assert is_positive(5)
    assert not is_positive(0)
    assert not is_positive(-1)


def test_check():
    with pytest.raises(ValueError):
        check(-1)
    assert check(0) == 0
"""

GATES = """\
[mutation]
seed = 1
timeout_factor = 4.0
max_minutes = 5.0
quick_max_minutes = 5.0
quick_nlocations = 3

[mutation.modules."kd_toy.m"]
score = 90.0
tests = ["packages/kd-toy/tests/test_m.py"]
nlocations = 10
"""


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def toy_repo(root: Path, tests: str = STRONG_TESTS) -> Path:
    src = root / "packages" / "kd-toy" / "src" / "kd_toy"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "m.py").write_text(TOY)
    (root / "packages" / "kd-toy" / "tests").mkdir()
    (root / "packages" / "kd-toy" / "tests" / "test_m.py").write_text(tests)
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [tool.pytest.ini_options]
        addopts = ["--import-mode=importlib"]
        """)
    )
    (root / "gates.toml").write_text(GATES)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "toy")
    return root


def gate(root: Path, *args: str) -> tuple[int, str, dict[str, object]]:
    out = root / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qa.mutation",
            "--root",
            str(root),
            "--gates",
            str(root / "gates.toml"),
            "--out",
            str(out),
            *args,
        ],
        cwd=gates.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(gates.ROOT)},
    )
    report = (
        json.loads((out / "mutation-report.json").read_text())
        if (out / "mutation-report.json").exists()
        else {}
    )
    return proc.returncode, proc.stdout + proc.stderr, report


def statuses(report: dict[str, Any]) -> dict[tuple[int, str, str], str]:
    [f] = report["files"].values()
    return {
        (m["location"]["start"]["line"], m["mutatorName"], m["replacement"]): m["status"]
        for m in f["mutants"]
    }


@pytest.mark.slow
def test_strong_tests_kill_every_mutant_function_and_import_time_alike(tmp_path: Path) -> None:
    root = toy_repo(tmp_path / "repo")
    code, out, report = gate(root)
    assert code == 0, out
    assert stryker.problems(report) == []
    seen = statuses(report)
    # an import-time mutant (STRICT = False) is applied by re-importing the module
    assert seen[(1, "BooleanLiteral", "False")] == "Killed"
    assert seen[(5, "ArithmeticOperator", "-")] == "Killed"
    assert "100.0%" in out
    assert (root / "out" / "index.html").exists()
    assert not (root / "qa").exists()  # no --record: nothing written into the tree


@pytest.mark.slow
def test_weakening_the_tests_alone_is_caught_by_the_quick_run(tmp_path: Path) -> None:
    root = toy_repo(tmp_path / "repo")
    # nothing changed since the base: nothing to mutate, the gate passes
    code, out, _ = gate(root, "--quick", "--base", "HEAD")
    assert code == 0, out
    assert "NOTHING CHANGED" in out
    # the pull request removes the key assertions of the module's test and no product line
    weak = (
        STRONG_TESTS.replace("    assert not is_positive(0)\n", "")
        .replace("    assert not is_positive(-1)\n", "")
        .replace("    assert check(0) == 0\n", "")
    )
    (root / "packages" / "kd-toy" / "tests" / "test_m.py").write_text(weak)
    code, out, report = gate(root, "--quick", "--base", "HEAD")
    assert code == 1, out
    assert "its tests changed" in out
    assert "BELOW FLOOR" in out
    seen = statuses(report)
    assert seen[(9, "EqualityOperator", ">=")] == "Survived"  # x > 0 -> x >= 0 lives now
    assert len(seen) == len(statuses(gate(root)[2]))  # every mutant, not only changed lines


@pytest.mark.slow
def test_a_changed_product_line_is_mutated_alone(tmp_path: Path) -> None:
    root = toy_repo(tmp_path / "repo")
    m = root / "packages" / "kd-toy" / "src" / "kd_toy" / "m.py"
    m.write_text(TOY.replace("return a + b", "return b + a"))
    code, out, report = gate(root, "--quick", "--base", "HEAD")
    assert code == 0, out
    assert set(statuses(report)) == {(5, "ArithmeticOperator", "-")}


def test_a_trial_runs_its_covering_tests_cheapest_first_with_each_file_together() -> None:
    from qa.mutation.warm import Baseline, _Selector

    durations = {
        "t/a.py::slow": 9.0,
        "t/b.py::mid": 0.5,
        "t/a.py::fast": 0.1,
        "t/b.py::quick": 0.05,
        "t/a.py::other": 0.2,
    }
    lines = {"m.py": {3: list(durations), 4: ["t/a.py::slow"]}}
    base = Baseline(lines, durations, [], 0, 1.0)
    # b's cheapest (0.05) beats a's (0.1); within a file, by time
    order = base.covering("m.py", 3, 3)
    assert order == [
        "t/b.py::quick",
        "t/b.py::mid",
        "t/a.py::fast",
        "t/a.py::other",
        "t/a.py::slow",
    ]
    assert base.covering("m.py", 4, 4) == ["t/a.py::slow"]

    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    items = [Item(t) for t in [*durations, "t/c.py::unknown"]]
    _Selector(None, order).pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == [*order, "t/c.py::unknown"]
    items = [Item(t) for t in durations]
    _Selector({"t/a.py::slow", "t/b.py::mid"}, order).pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == ["t/b.py::mid", "t/a.py::slow"]
