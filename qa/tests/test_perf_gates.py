"""The quick bench fails when one benchmarked path gets 2x slower (slowdowns planted for real).

Each gated path is timed against a reference measured in the same run (json.loads for the
dataset reader, ``python -c pass`` for CLI start-up, the naive path and Liger for the losses),
and that ratio is compared with the stored baseline. ``KD_BENCH_SLOWDOWN=BENCH:PATH=2`` makes
the bench script run PATH's timed work twice: the slow tests below run the real quick bench
with it and expect exit 1 naming the path. `nox -s bench` runs them (they need the bench
group: Liger) before the benchmarks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "losses": ROOT / "packages" / "kd-train" / "benchmarks" / "bench_losses.py",
    "data": ROOT / "packages" / "kd-train" / "benchmarks" / "bench_data.py",
    "startup": ROOT / "packages" / "kd-train" / "benchmarks" / "bench_startup.py",
}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", SCRIPTS[name])
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def losses() -> ModuleType:
    return _load("losses")


def test_the_quick_losses_baseline_holds_every_same_run_ratio(losses: ModuleType) -> None:
    quick = json.loads(losses.BASELINE.read_text())["quick"]
    for key, ratios in quick.items():
        assert {"chunked_time_ratio", "naive_over_liger_time_ratio"} <= set(ratios), key
        assert "chunked_over_liger_time_ratio" in ratios, key


def test_a_doubled_ratio_fails_the_losses_comparison(losses: ModuleType) -> None:
    quick = json.loads(losses.BASELINE.read_text())["quick"]
    same = {k: dict(v) for k, v in quick.items()}
    assert losses.compare_baseline("quick", same, 1.25) == []
    for name in ("chunked_time_ratio", "naive_over_liger_time_ratio"):
        doubled = {k: {**v, name: 2 * v[name]} for k, v in quick.items()}
        found = losses.compare_baseline("quick", doubled, 1.25)
        assert len(found) == len(quick)
        assert all(name in line for line in found)


def test_the_planted_slowdown_is_read_per_bench_and_path(
    losses: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KD_BENCH_SLOWDOWN", "data:read=3,losses:naive=2")
    assert losses.planted_slowdown("losses", "naive") == 2
    assert losses.planted_slowdown("losses", "chunked") == 1
    assert losses.planted_slowdown("data", "read") == 3
    monkeypatch.delenv("KD_BENCH_SLOWDOWN")
    assert losses.planted_slowdown("losses", "naive") == 1


def _quick(name: str, tmp_path: Path, slowdown: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KD_PERF_RESULTS": str(tmp_path), "KD_BENCH_SLOWDOWN": slowdown}
    return subprocess.run(
        [sys.executable, str(SCRIPTS[name]), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )


PLANTED = [
    ("losses", "losses:chunked=2", "chunked"),
    ("losses", "losses:naive=2", "naive_over_liger"),
    ("data", "data:stream=2", "stream_vs_json"),
    ("data", "data:read=2", "read_vs_json"),
    ("startup", "startup:kd-train=2", "kd-train"),
    ("startup", "startup:kd-convert=2", "kd-convert"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("bench", "slowdown", "named"), PLANTED)
def test_a_planted_2x_slowdown_fails_the_quick_bench(
    bench: str, slowdown: str, named: str, tmp_path: Path
) -> None:
    if bench == "losses" and importlib.util.find_spec("liger_kernel") is None:
        pytest.skip("the losses bench's peer (liger-kernel, the bench group) is not installed")
    proc = _quick(bench, tmp_path, slowdown)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert named in proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / f"{bench}.json").is_file()  # written outside the tree
