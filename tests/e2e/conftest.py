"""Shared stages of the end-to-end tests: each one a real command line, run once per session.

The stages are those of `nox -s pipeline` (noxfile.py), run the same way: as subprocesses of
the installed command lines, next to the interpreter running the tests.

* ``distilled``: ``python -m kd_train.pipelines all`` (toy and 8-ball students + held-out sets);
* ``eightball_accuracy``: ``kd-eval classify`` (label likelihood) of the 8-ball student on its
  held-out split, untrained and distilled (shared by test_eightball.py and test_pipeline.py).

Every test module using them is in the ``pipeline`` xdist group, so a parallel run computes
them once, on one worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stages import WHEN, Distilled, read_json, run_cli


@pytest.fixture(scope="session")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> Distilled:
    """Distil the toy and 8-ball students with the real pipeline command line."""
    out = tmp_path_factory.mktemp("pipeline")
    proc = run_cli("python", "-m", "kd_train.pipelines", "all", "--out", out, "--no-progress")
    return Distilled(out, read_json(out / "summary.json"), proc.stdout)


@pytest.fixture(scope="session")
def eightball_accuracy(distilled: Distilled) -> dict[str, dict[str, Any]]:
    """``kd-eval classify`` reports (``classification`` sections) keyed ``before``/``after``."""
    students = (distilled.init_dir("8-ball"), Path(distilled.summary["8-ball"]["student_dir"]))
    sections = {}
    for when, student in zip(WHEN, students, strict=True):
        report = distilled.out / "eval" / f"8-ball-classify-{when}.json"
        run_cli(
            *("kd-eval", "classify", student, "--labels", "8ball"),
            *("--data", distilled.heldout("8-ball"), "--out", report, "--no-progress"),
        )
        sections[when] = read_json(report)["classification"]
    return sections
