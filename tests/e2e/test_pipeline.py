"""The main job, run as a process exactly as `nox -s pipeline` runs it."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_pipeline_all_distils_the_toy_students(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_train.pipelines",
            "all",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    toy, ball = summary["toy"], summary["8-ball"]
    assert toy["teacher_ce_after"] < 0.2 * toy["teacher_ce_before"]
    assert toy["student_heldout_kl_after"] < 0.5 * toy["student_heldout_kl_before"]
    assert ball["teacher_heldout_accuracy"] >= 0.9
    assert ball["student_heldout_accuracy_after"] >= 0.8
    assert ball["student_heldout_accuracy_before"] < 0.3
    assert ball["student_heldout_kl_after"] < 0.5 * ball["student_heldout_kl_before"]
    assert "student KL to teacher, held out" in proc.stdout
    assert (tmp_path / "8-ball" / "distill-run" / "student" / "config.json").exists()
