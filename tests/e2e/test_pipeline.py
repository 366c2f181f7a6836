"""The main job, run as a process exactly as `nox -s pipeline` runs it."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_pipeline_all_runs_end_to_end(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "kd_train.pipelines", "all", "--out", str(tmp_path)], check=True
    )
    assert json.loads((tmp_path / "summary.json").read_text())["student_init_kl"] > 0
