"""``nox -s showcase`` at a tiny size: every arm trains through ``kd-train distill`` and the
result file is well formed.

The tiny size swaps SmolLM2 for a random tiny Llama teacher (with a BPE tokenizer trained on
the same standard-library sentences): SmolLM2 needs minutes per arm on a CPU. Everything
else is the showcase's own path: the held-out split, ``build_cache`` for the cached arm,
six arms x two seeds as ``kd-train distill`` processes, checkpoints for the curves, the
bootstrap intervals, the table and the charts.
"""

import math
from pathlib import Path

import pytest

from tests.e2e.stages import read_json, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # about 2 minutes on 2 cores

SCRIPT = Path(__file__).resolve().parents[2] / "packages/kd-eval/benchmarks/showcase.py"
ARMS = {"ce", "forward_kl", "reverse_kl", "jsd", "topk16_cached", "on_policy"}
METRICS = ("bpb", "kl", "top1")


def check_interval(estimate, where):
    low, value, high = estimate["low"], estimate["value"], estimate["high"]
    assert all(math.isfinite(x) for x in (low, value, high)), where
    assert low <= value <= high, f"{where}: {value} outside [{low}, {high}]"


def check_result(result):
    """Every field the docs page reads is there, finite, and each interval holds its mean."""
    assert set(result["arms"]) == ARMS
    assert set(result["vs_ce"]) == ARMS - {"ce"}
    assert result["data"]["license"] == "PSF-2.0"
    assert result["data"]["heldout_records"] > 0
    assert result["data"]["train_records"] > 0
    assert result["command"].startswith("python packages/kd-eval/benchmarks/showcase.py")
    check_interval(result["teacher"]["bpb"], "teacher bpb")
    for arm, entry in result["arms"].items():
        for m in METRICS:
            check_interval(entry[m], f"{arm} {m}")
            assert len(entry[m]["seeds"]) == result["seeds"], f"{arm} {m} seeds"
            assert len(entry["per_example"][m]) == result["data"]["heldout_records"]
            assert math.isfinite(entry[m]["seed_sd"])
            assert entry[m]["seed_sd"] >= 0
        assert entry["top1"]["low"] >= 0.0, arm
        assert entry["top1"]["high"] <= 1.0, arm
        assert entry["kl"]["low"] >= 0.0, arm
        assert entry["bpb"]["low"] > 0.0, arm
        assert len(entry["curves"]) == result["seeds"], arm
        steps = [point["step"] for point in entry["curve"]]
        assert steps[0] == 0, f"{arm} curve steps {steps}"
        assert steps[-1] == result["steps"], f"{arm} curve steps {steps}"
    for arm, diffs in result["vs_ce"].items():
        for m in METRICS:
            check_interval(diffs[m], f"{arm} - ce {m}")
    for m in METRICS:
        check_interval(result["topk16_vs_dense"][m], f"topk16 - forward_kl {m}")


def test_tiny_showcase_writes_a_well_formed_result(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_PERF_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("KD_PERF_CHARTS", str(tmp_path / "charts"))
    proc = run_cli("python", SCRIPT, "--tiny", "--no-progress", "--jobs", "2")
    result = read_json(tmp_path / "results" / "showcase.json")
    check_result(result)
    assert (result["steps"], result["seeds"]) == (4, 2)
    for arm in ARMS:
        assert f"| `{arm}` |" in proc.stdout, f"{arm} missing from the printed table"
        assert (tmp_path / "charts" / f"showcase_{arm}.png").stat().st_size > 1000, arm
    assert (tmp_path / "charts" / "showcase.png").stat().st_size > 1000
