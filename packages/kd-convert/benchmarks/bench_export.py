"""Benchmark: export time per format, and onnxruntime vs PyTorch latency on the same inputs.

Run through ``nox -s bench`` (``python -m qa.perf bench [--quick]``) or directly::

    python packages/kd-convert/benchmarks/bench_export.py [--quick] [--update-baseline]

Figures go to ``qa/perf/results/export.json``; each time figure is compared with
``qa/perf/baselines/export.json`` as a ratio and fails beyond ``[perf] tolerance``
(``qa/gates.toml``). ``--quick`` uses a smaller student, fewer lengths and repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[3]
NAME = "export"
RESULTS = ROOT / "qa" / "perf" / "results" / f"{NAME}.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / f"{NAME}.json"
FORMATS = ("torchscript", "exported", "onnx", "coreml")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 1 on a regression beyond tolerance."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--update-baseline", action="store_true")
    args = parser.parse_args(argv)

    from kd_convert.pipeline import export_model
    from kd_convert.spec import ExportSpec
    from kd_convert.wrapper import ExportWrapper, load_student
    from kd_train.atomic import atomic_write_text
    from kd_train.testing import save_tiny_llama

    lengths = (64,) if args.quick else (64, 128, 256)
    repeats = 10 if args.quick else 30
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_dir = save_tiny_llama(
            Path(tmp) / "student", hidden_size=64 if args.quick else 128, num_layers=2
        )
        for fmt in FORMATS:
            start = time.perf_counter()
            result = export_model(model_dir, Path(tmp) / fmt, ExportSpec(fmt, lengths))
            figures[f"export_seconds.{fmt}"] = time.perf_counter() - start
            if fmt == "onnx":
                onnx_path = result.artifact
        # One thread each: a fair comparison, and stable on a shared machine (torch's
        # intra-op pool collapses under oversubscription: 1 ms became 1 s on a loaded box).
        torch.set_num_threads(1)
        wrapper = ExportWrapper(load_student(model_dir))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )

        def run_onnx(a: np.ndarray, b: np.ndarray) -> object:
            return session.run(None, {"input_ids": a, "attention_mask": b})

        for length in lengths:
            ids = np.random.default_rng(0).integers(4, 300, (1, length)).astype(np.int32)
            mask = np.ones_like(ids)
            t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

            def torch_call(a: torch.Tensor = t_ids, b: torch.Tensor = t_mask) -> object:
                with torch.no_grad():
                    return wrapper(a, b)

            torch_ms = median_ms(torch_call, repeats)
            ort_ms = median_ms(lambda a=ids, b=mask: run_onnx(a, b), repeats)
            figures[f"latency_ms.torch.T{length}"] = torch_ms
            figures[f"latency_ms.onnxruntime.T{length}"] = ort_ms
            figures[f"ratio.onnxruntime_over_torch.T{length}"] = ort_ms / torch_ms

    mode = "quick" if args.quick else "full"
    atomic_write_text(RESULTS, json.dumps({"mode": mode, "figures": figures}, indent=2) + "\n")
    baseline = load_baseline(mode)
    tolerance = tomllib.loads((ROOT / "qa" / "gates.toml").read_text())["perf"]["tolerance"]
    regressions = print_table(figures, baseline, tolerance)
    if args.update_baseline:
        stored = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
        stored[mode] = figures
        atomic_write_text(BASELINE, json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"baseline updated: {BASELINE.relative_to(ROOT)} [{mode}]")
        return 0
    return 1 if regressions else 0


def median_ms(call: object, repeats: int) -> float:
    """Median wall time of ``call()`` in milliseconds, after two warm-up calls."""
    assert callable(call)
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def load_baseline(mode: str) -> dict[str, float]:
    """Return the stored figures for ``mode`` (empty when there is no baseline yet)."""
    if not BASELINE.exists():
        return {}
    return dict(json.loads(BASELINE.read_text()).get(mode, {}))


def print_table(figures: dict[str, float], baseline: dict[str, float], tolerance: float) -> int:
    """Print figure, baseline and ratio; return how many time figures regressed."""
    regressions = 0
    print(f"{'figure':44} {'value':>10} {'baseline':>10} {'ratio':>7}")
    for name, value in figures.items():
        base = baseline.get(name)
        ratio = value / base if base else float("nan")
        # ratio.* figures are informative (ORT vs torch); times regress when they grow.
        bad = base is not None and not name.startswith("ratio.") and ratio > tolerance
        regressions += bad
        shown = f"{base:10.3f}" if base is not None else f"{'-':>10}"
        flag = "  REGRESSION" if bad else ""
        print(f"{name:44} {value:10.3f} {shown} {ratio:7.2f}{flag}")
    return regressions


if __name__ == "__main__":
    sys.exit(main())
