import json
import os
import textwrap
from pathlib import Path

import pytest

from qa import gates
from qa.mutation import history
from qa.mutation.legacy import check_module, copy_tree, merge, mutatest_args
from qa.mutation.report import Counts, parse
from qa.mutation.shim import SortedSampleRandom, with_seed

FIXTURE = """\
Mutatest diagnostic summary
===========================
 - Source location: /tmp/x/packages/kd-train/src/kd_train/losses
 - Mode: f

Overall mutation trial summary
==============================
 - SURVIVED: 3
 - DETECTED: 10
 - TIMEOUT: 2
 - ERROR: 1
 - UNKNOWN: 1
 - TOTAL RUNS: 17
 - RUN DATETIME: 2026-11-29 10:44:56.925145


Mutations by result status
==========================


SURVIVED
--------
 - packages/kd-train/src/kd_train/losses/masking.py: (l: 34, c: 66) - mutation from <class 'ast.BitOr'> to <class 'ast.BitXor'>
 - packages/kd-train/src/kd_train/losses/masking.py: (l: 45, c: 4) - mutation from If_Statement to If_False
 - packages/kd-train/src/kd_train/losses/kl.py: (l: 9, c: 8) - mutation from None to True


DETECTED
--------
 - packages/kd-train/src/kd_train/losses/masking.py: (l: 34, c: 66) - mutation from <class 'ast.BitOr'> to <class 'ast.BitAnd'>
"""  # noqa: E501


def test_a_mutatest_report_is_parsed_to_the_right_score() -> None:
    report = parse(FIXTURE)
    assert report.counts == Counts(detected=10, survived=3, timeout=2, errors=1, unknown=1)
    # (10 detected + 2 timeouts) / (17 - 1 error - 1 unknown) = 12 / 15
    assert report.counts.score == 80.0
    assert [m.describe() for m in report.survivors] == [
        "packages/kd-train/src/kd_train/losses/masking.py:34:66  BitOr -> BitXor",
        "packages/kd-train/src/kd_train/losses/masking.py:45:4  If_Statement -> If_False",
        "packages/kd-train/src/kd_train/losses/kl.py:9:8  None -> True",
    ]


def test_no_judged_trial_has_no_score() -> None:
    assert Counts(errors=2, unknown=1).score is None
    assert merge([parse(FIXTURE), parse(FIXTURE)]).counts.total == 34


def test_the_shim_samples_sets_deterministically() -> None:
    population = {("op", i) for i in range(50)}
    a = SortedSampleRandom(3).sample(population, k=5)
    b = SortedSampleRandom(3).sample(set(sorted(population, reverse=True)), k=5)
    assert a == b
    assert with_seed(["-s", "x"], 9) == ["-s", "x", "--rseed", "9"]


def test_history_keeps_one_line_per_run_and_the_latest_per_module(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    result = parse(FIXTURE).as_dict()
    history.append(history.entry("kd_train.losses", result, {"sha": "a"}), path)
    history.append(history.entry("kd_train.losses", {**result, "score": 90.0}, {"sha": "b"}), path)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["module"], x["score"], x["sha"]) for x in lines] == [
        ("kd_train.losses", 80.0, "a"),
        ("kd_train.losses", 90.0, "b"),
    ]
    assert history.latest(path)["kd_train.losses"]["sha"] == "b"
    assert set(lines[0]) >= {"date", "module", "score", "counts", "total", "sha"}


def test_the_committed_history_is_well_formed() -> None:
    for module, item in history.latest().items():
        assert module in gates.mutation(gates.read()).modules
        assert {"date", "sha", "score", "counts", "python"} <= set(item)
        assert {"mutatest", "engine"} & set(item), "which engine measured the score"


def test_a_missing_module_fails_unless_pending(tmp_path: Path) -> None:
    cfg = gates.mutation(gates.read())
    mod = gates.MutationModule("kd_nope.x", 80.0, ("tests",), 1)
    assert check_module(mod, cfg, tmp_path, tmp_path, None, 1.0, root=tmp_path).status == "MISSING"
    mod = gates.MutationModule("kd_nope.x", 80.0, ("tests",), 1, pending=True)
    outcome = check_module(mod, cfg, tmp_path, tmp_path, None, 1.0, root=tmp_path)
    assert outcome.status == "PENDING"
    assert not outcome.failed


def test_mutatest_runs_full_mode_with_the_seed_and_xdist_off(tmp_path: Path) -> None:
    cfg = gates.mutation(gates.read())
    args = mutatest_args("src/m.py", ["tests/t.py"], 7, cfg, tmp_path / "r.rst")
    assert args[args.index("-m") + 1] == "f"
    assert args[args.index("-n") + 1] == "7"
    assert args[args.index("--rseed") + 1] == str(cfg.seed)
    assert "-n 0" in args[args.index("-t") + 1]


TOY = """\
def add(a, b):
    return a + b


def is_positive(x):
    return x > 0
"""

TOY_TESTS = """\
from kd_toy.m import add, is_positive


def test_add():
    assert add(2, 3) == 5


def test_is_positive():
    assert is_positive(5)
"""


@pytest.mark.slow
def test_a_weak_test_lets_mutants_survive_and_fails_the_gate(tmp_path: Path) -> None:
    """A real mutatest run on a toy package (the former engine; needs KD_MUTATEST_PYTHON)."""
    if not os.environ.get("KD_MUTATEST_PYTHON"):
        pytest.skip("KD_MUTATEST_PYTHON unset: `nox -s mutation -- --engine mutatest` sets it")
    root = tmp_path / "repo"
    src = root / "packages" / "kd-toy" / "src" / "kd_toy"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "m.py").write_text(TOY)
    (root / "packages" / "kd-toy" / "tests").mkdir()
    (root / "packages" / "kd-toy" / "tests" / "test_m.py").write_text(TOY_TESTS)
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [tool.pytest.ini_options]
        addopts = ["--import-mode=importlib"]
        """)
    )
    copy = tmp_path / "copy"
    copy_tree(root, copy)
    cfg = gates.mutation(gates.read())
    mod = gates.MutationModule("kd_toy.m", 95.0, ("packages/kd-toy/tests/test_m.py",), 10)
    outcome = check_module(mod, cfg, copy, tmp_path, None, 120.0, root=root)
    assert outcome.status == "BELOW FLOOR", outcome.note
    assert outcome.report is not None
    survivors = {(m.line, m.original, m.mutation) for m in outcome.report.survivors}
    assert (6, "Gt", "GtE") in survivors
    assert all(m.line == 6 for m in outcome.report.survivors)
    assert outcome.report.counts.detected >= 5


def test_quick_mode_skips_a_module_whose_files_did_not_change(tmp_path: Path) -> None:
    src = tmp_path / "packages" / "kd-toy" / "src" / "kd_toy"
    src.mkdir(parents=True)
    (src / "m.py").write_text("X = 1\n")
    cfg = gates.mutation(gates.read())
    mod = gates.MutationModule("kd_toy.m", 80.0, ("tests",), 1)
    changed = ["packages/kd-toy/src/kd_toy/other.py"]
    outcome = check_module(mod, cfg, tmp_path, tmp_path, changed, 1.0, root=tmp_path)
    assert outcome.status == "NOTHING CHANGED"
    assert not outcome.failed
    # the module's file changed, but its tests are missing: an error, not a silent pass
    changed = ["packages/kd-toy/src/kd_toy/m.py"]
    outcome = check_module(mod, cfg, tmp_path, tmp_path, changed, 1.0, root=tmp_path)
    assert outcome.status == "ERROR"
    assert outcome.failed
