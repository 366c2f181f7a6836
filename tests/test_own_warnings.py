"""Our own code raises no UserWarning: the loss tests and doctests pass under ``-W error``.

``Converting a tensor with requires_grad=True to a scalar`` (``float()`` of a loss that
still carries its graph) was one; these modules are where such conversions live. The run
is a subprocess so that the warning filter is exactly the one a user would pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ROOT / "packages" / "kd-train"

PYTEST = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
CHECKED = [
    "--doctest-modules",
    str(LOSSES / "src" / "kd_train" / "losses"),
    str(LOSSES / "tests" / "losses" / "test_hidden.py"),
    str(LOSSES / "tests" / "losses" / "test_sparse.py"),
]


def test_loss_tests_and_doctests_pass_with_user_warnings_as_errors() -> None:
    done = subprocess.run(
        [*PYTEST, "-W", "error::UserWarning", *CHECKED],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
