"""The three command lines, run as real processes from the installed entry points."""

import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("command", ["kd-train", "kd-eval", "kd-convert"])
def test_entry_point_reports_versions(command):
    exe = shutil.which(command)
    assert exe, f"{command} is not installed as a console script"
    out = subprocess.run([exe, "version"], check=True, capture_output=True, text=True).stdout
    assert command in json.loads(out)


@pytest.mark.parametrize("command", ["kd-train", "kd-eval", "kd-convert"])
def test_unknown_subcommand_exits_2_without_traceback(command):
    proc = subprocess.run(
        [shutil.which(command), "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
