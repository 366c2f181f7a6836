import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train() -> ModuleType:
    return load_script("packages/kd-train/benchmarks/bench_train.py")


@pytest.fixture(scope="module")
def export() -> ModuleType:
    return load_script("packages/kd-convert/benchmarks/bench_export.py")


def test_train_old_flat_baseline_is_batch_16s(train: ModuleType) -> None:
    old = {"speed_ratio": 2.36, "memory_ratio": 1.26}
    assert train.stored_ratios(old, 16) == old
    assert train.stored_ratios(old, 8) == {}


def test_train_per_size_baseline_wins_over_flat(train: ModuleType) -> None:
    stored = {"sizes": {"16": {"speed_ratio": 3.0}}, "speed_ratio": 2.0}
    assert train.stored_ratios(stored, 16) == {"speed_ratio": 3.0}


def test_train_speed_regresses_downwards_memory_upwards(train: ModuleType) -> None:
    base = {"speed_ratio": 2.0, "memory_ratio": 0.5, "rss_ratio": 0.7}
    better = {"speed_ratio": 4.0, "memory_ratio": 0.1, "rss_ratio": 0.3}
    worse = {"speed_ratio": 1.5, "memory_ratio": 0.7, "rss_ratio": 0.9}
    assert train.regressions(16, better, base, 1.25) == []
    failed = train.regressions(16, worse, base, 1.25)
    assert [f.split()[2] for f in failed] == ["speed_ratio", "memory_ratio", "rss_ratio"]


def test_export_old_flat_baseline_is_the_reference_sizes(export: ModuleType) -> None:
    old = {"export_seconds.onnx": 19.5, "ratio.onnxruntime_over_torch.T64": 0.08}
    assert export.baseline_for(old, 64, 64) == old
    assert export.baseline_for(old, 128, 64) == {}
    new = {**old, "sizes": {"128": {"export_seconds.onnx": 30.0}}}
    assert export.baseline_for(new, 128, 64) == {"export_seconds.onnx": 30.0}
    assert export.baseline_for(new, 64, 64) == old


def test_export_gates_export_seconds_and_ab_ratios_not_absolute_latency(
    export: ModuleType,
) -> None:
    size = {
        "parameters": 1,
        "export_seconds": {"onnx": 3.0},
        "latency_ms": {"torch": {"64": 30.0}, "onnxruntime": {"64": 3.0}},
        "ratio_ort_over_torch": {"64": 0.1},
    }
    tripled = {name: value / 3 for name, value in export.flat_figures(size).items()}
    failed = export.print_table(64, size, tripled, 1.25)
    assert [f.split()[2] for f in failed] == [
        "export_seconds.onnx",
        "ratio.onnxruntime_over_torch.T64",
    ]


def test_startup_fails_a_slow_cli_and_a_ratio_past_the_baseline() -> None:
    startup = load_script("packages/kd-train/benchmarks/bench_startup.py")
    max_seconds, tolerance = startup.settings()
    figures = {
        "python -c pass s": 0.02,
        "kd-train help s": max_seconds + 0.1,
        "kd-train help ratio": 30.0,
        "kd-eval help s": 0.1,
        "kd-eval help ratio": 5.0,
    }
    baseline = {"kd-train help ratio": 30.0 / (tolerance + 0.5), "kd-eval help ratio": 5.0}
    failed = startup.check(figures, baseline)
    assert [line.split(":")[0] for line in failed] == ["kd-train help s", "kd-train help ratio"]


def test_export_student_decode_widens_a_short_context_on_a_copy(
    export: ModuleType, tmp_path: Path
) -> None:
    import json

    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (student / "model.safetensors").write_bytes(b"weights")
    assert export.widened_student(student, tmp_path / "wide", 512) == student
    wide = export.widened_student(student, tmp_path / "wide", 1088)
    assert json.loads((wide / "config.json").read_text())["max_position_embeddings"] == 1088
    assert (wide / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((student / "config.json").read_text())["max_position_embeddings"] == 512
    assert export.student_arg("toy=runs/s") == ("toy", Path("runs/s"))
    with pytest.raises(export.argparse.ArgumentTypeError, match="NAME=DIR"):
        export.student_arg("runs/s")
