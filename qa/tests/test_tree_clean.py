"""Routine runs leave the tree clean: records change only when asked (``--record``).

Routine outputs (gate reports, coverage data, perf figures of a run, the built site) go to
git-ignored places; the committed records (coverage record and floors, perf results,
baselines and charts) are written only by ``python -m qa.coverage record`` and
``python -m qa.perf bench --record`` / ``--update-baseline``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qa import gates
from qa.coverage.record import RECORD
from qa.perf import __main__ as perf_main
from qa.perf.common import DOCS_CHARTS, RESULTS, SCRATCH

ROOT = gates.ROOT
#: Committed records: a routine run must not touch them.
RECORDS = ["qa/coverage/record.json", "qa/gates.toml", "qa/perf", "docs/_static/perf"]


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def _ignored(path: Path) -> bool:
    return _git("check-ignore", "-q", str(path.relative_to(ROOT))).returncode == 0


def _status(paths: list[str]) -> str:
    return _git("status", "--porcelain", "--untracked-files=all", "--", *paths).stdout


@pytest.mark.parametrize(
    "path",
    [
        gates.REPORTS / "coverage.json",
        gates.REPORTS / "gate-coverage.json",
        SCRATCH / "losses.json",
        SCRATCH / "charts" / "losses.png",
        ROOT / ".coverage",
        ROOT / "docs" / "_build" / "html" / "index.html",
    ],
)
def test_routine_outputs_are_git_ignored(path: Path) -> None:
    assert _ignored(path), f"{path.relative_to(ROOT)} would dirty the tree"


def test_the_records_are_committed_files() -> None:
    for path in (RECORD, gates.GATES, RESULTS / "losses.json", DOCS_CHARTS / "losses.png"):
        assert _git("ls-files", "--error-unmatch", str(path.relative_to(ROOT))).returncode == 0


@pytest.mark.parametrize(
    "script", sorted(ROOT.glob("packages/*/benchmarks/bench_*.py")), ids=lambda p: p.stem
)
def test_every_bench_script_writes_where_it_is_told(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert '"results"' not in text, "results paths come from KD_PERF_RESULTS"
    assert '"_static"' not in text, "chart paths come from KD_PERF_CHARTS"
    assert "KD_PERF_RESULTS" in text


FAKE_BENCH = """
import json, os, sys
from pathlib import Path
out = Path(os.environ["KD_PERF_RESULTS"])
(out / "fake.json").write_text(json.dumps({"quick": {"seconds": 1.0}, "args": sys.argv[1:]}))
"""


def test_a_routine_bench_run_leaves_the_records_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bench_fake.py"
    script.write_text(FAKE_BENCH)
    monkeypatch.setattr(perf_main, "benchmark_scripts", lambda: [script])
    monkeypatch.setattr(perf_main, "ROOT", tmp_path)  # only for the printed relative paths
    monkeypatch.setattr(perf_main, "SCRATCH", tmp_path / "scratch")
    before = _status(RECORDS)
    assert perf_main.run_bench(["--quick"]) == 0
    assert _status(RECORDS) == before
    assert (tmp_path / "scratch" / "fake.json").is_file()
    assert (tmp_path / "scratch" / "charts" / "fake.png").is_file()


def test_record_is_the_one_way_into_the_committed_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bench_fake.py"
    script.write_text(FAKE_BENCH)
    monkeypatch.setattr(perf_main, "benchmark_scripts", lambda: [script])
    monkeypatch.setattr(perf_main, "ROOT", tmp_path)
    monkeypatch.setattr(perf_main, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(perf_main, "DOCS_CHARTS", tmp_path / "charts")
    assert perf_main.run_bench(["--record", "--quick"]) == 0
    assert (tmp_path / "results" / "fake.json").is_file()
    assert (tmp_path / "charts" / "fake.png").is_file()


def test_the_coverage_gate_writes_only_reports_unless_asked(tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    report.write_text('{"files": {}}')
    before = _status(RECORDS)
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, str(report), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # nothing measured: below every floor
    assert _status(RECORDS) == before
    assert (tmp_path / "coverage-summary.json").is_file()


CHECK = """
import sys
from pathlib import Path
from qa.coverage.__main__ import cmd_check, cmd_record
rc = cmd_check(Path(sys.argv[1]), Path(sys.argv[2]))
assert cmd_record(Path(sys.argv[2])) == 1  # a failing run is never recorded
raise SystemExit(rc)
"""
