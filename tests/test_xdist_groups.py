"""The test runner keeps an ``xdist_group`` on one worker (the suite relies on it).

pytest 9.2 with pytest-xdist 3.8 silently dropped the grouping (pytest-dev/pytest-xdist#1386):
tests of one group ran on several workers at once. ``ci/constraints.txt`` pins a pytest that
groups; this test fails if an upgrade breaks it again.
"""

import subprocess
import sys
from collections import Counter

GROUPED = """
import os, time, pytest
pytestmark = pytest.mark.xdist_group("one")

@pytest.mark.parametrize("i", range(6))
def test_worker(i):
    time.sleep(0.1)
    with open(os.environ["WORKERS_FILE"], "a") as out:
        out.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_one_xdist_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    workers = tmp_path / "workers.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup",
         "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tmp_path),
         str(tmp_path / "test_grouped.py")],
        capture_output=True, text=True, cwd=tmp_path,
        env={"WORKERS_FILE": str(workers), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = Counter(workers.read_text().split())
    assert sum(seen.values()) == 6
    assert len(seen) == 1, f"one group ran on several workers: {dict(seen)}"
