"""A long mutatest run prints a progress line every minute (here: every 0.1 s)."""

import subprocess
import sys
from pathlib import Path

import pytest

from qa.mutation import legacy as mutation


def sleeper(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_a_long_run_prints_how_many_mutants_it_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mutation, "PROGRESS_EVERY_S", 0.1)
    log = tmp_path / "m.log"
    log.write_text("Result: Detected at a.py: (1, 2)\n", encoding="utf-8")
    mutation.wait_with_progress(sleeper(0.5), log, budget_s=30, nlocations=20)
    first = capsys.readouterr().out.splitlines()[0]
    assert "1 of up to 20 mutants tried (partial results: 1 detected)" in first


def test_a_run_past_its_budget_times_out(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    log.write_text("", encoding="utf-8")
    proc = sleeper(30)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            mutation.wait_with_progress(proc, log, budget_s=0.2, nlocations=5)
    finally:
        proc.kill()
        proc.wait()
