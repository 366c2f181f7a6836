"""The import rules of the house hold, and the gate that checks them fails when one is broken.

The rules live in ``.importlinter`` (layers inside each package, no cycles, kd_train below
kd_eval and kd_convert, the fixtures and the demos outside the product, the gates apart);
``docs/development.md`` draws them. ``lint-imports`` reads the source statically (grimp),
so a broken rule is found without importing torch.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
SOURCES = {
    "kd_train": ROOT / "packages" / "kd-train" / "src" / "kd_train",
    "kd_eval": ROOT / "packages" / "kd-eval" / "src" / "kd_eval",
    "kd_convert": ROOT / "packages" / "kd-convert" / "src" / "kd_convert",
    "qa": ROOT / "qa",
}
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` on the packages importable from ``cwd`` (first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-c", LINT, str(CONFIG), "--no-cache", "--no-logo"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def python_files_only(directory: str, names: list[str]) -> set[str]:
    return {
        n for n in names
        if n == "__pycache__" or (not n.endswith(".py") and not Path(directory, n).is_dir())
    }  # fmt: skip


def test_the_repository_keeps_every_import_rule() -> None:
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


# (file to plant the import in, the import, the contract that must report it broken)
PLANTED = [
    ("kd_train/trainer/loop.py", "import kd_train.testing",
     "Product code never imports the fixtures (kd_train.testing)"),
    ("kd_eval/tasks/labels.py", "import kd_train.testing",
     "Product code never imports the fixtures (kd_train.testing)"),
    ("kd_train/trainer/outputs.py", "import kd_train.commands.version",
     "kd_train layers"),
    ("kd_eval/tasks/labels.py", "import kd_train.pipelines.toydata",
     "kd_eval and kd_convert do not import the demo pipelines"),
    ("kd_train/atomic.py", "import kd_eval.errors",
     "kd_train imports neither kd_eval nor kd_convert"),
    ("qa/summary.py", "import kd_train.atomic",
     "The gates (qa) import none of the packages"),
    ("kd_train/errors.py", "import kd_train.cliutil",
     "No import cycles between the modules of any package"),
    ("kd_eval/errors.py", "import kd_eval.commands",
     "kd_eval layers"),
    ("kd_convert/wrapper.py", "import kd_convert.pipeline",
     "kd_convert layers"),
    ("kd_convert/spec.py", "import kd_eval.errors",
     "kd_eval and kd_convert do not import each other"),
    ("kd_train/cliutil.py", "import qa.gates",
     "No package imports qa"),
]  # fmt: skip


IDS = [f"{path}:{line.split()[-1]}" for path, line, _ in PLANTED]


@pytest.mark.parametrize(("path", "line", "contract"), PLANTED, ids=IDS)
def test_a_planted_forbidden_import_fails_the_gate(
    tmp_path: Path, path: str, line: str, contract: str
) -> None:
    for name, source in SOURCES.items():
        shutil.copytree(source, tmp_path / name, ignore=python_files_only)
    assert lint_imports(tmp_path).returncode == 0, "the copy must pass before the plant"
    planted = tmp_path / path
    planted.write_text(planted.read_text() + f"\n{line}  # planted by the test\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{contract} BROKEN" in proc.stdout, proc.stdout
