"""Benchmark: export time per format and size, and onnxruntime vs PyTorch latency (A/B).

Tiny students (2 layers; hidden 64, 128, 256; ``--quick``: hidden 64) are exported to every
format (torchscript, exported, onnx, coreml) for sequence lengths 64, 128, 256 (``--quick``:
64). One untimed export per format of a hidden-32 student comes first, so that one-time
imports and caches do not land on the first size. Then, per size and length, the eager
``ExportWrapper`` (torch) and the ONNX artifact (onnxruntime) run on the same input,
alternately, one call each per round after warm-up, one thread each; each side's latency is
the median of its calls, so ``ORT / torch`` is an A/B ratio of the same run.

Run through ``nox -s bench`` (``python -m qa.perf bench [--quick]``) or directly::

    python packages/kd-convert/benchmarks/bench_export.py [--quick] [--update-baseline]

``qa/perf/results/export.json``: ``{"mode", "figures": {flat figures of the reference size
(hidden 128; --quick: 64)}, "sizes": {hidden: {"hidden", "parameters", "export_seconds":
{format: s}, "latency_ms": {"torch"|"onnxruntime": {length: ms}}, "ratio_ort_over_torch":
{length: r}}}}``. Gate: per size, each ``export_seconds.<format>`` and
``ratio.onnxruntime_over_torch.T<length>`` over its baseline in
``qa/perf/baselines/export.json`` (``{mode: {flat reference figures, "sizes": {hidden: flat
figures}}}``; a file with only the flat figures is read as the reference size's) fails
beyond ``[perf.export] tolerance`` (else ``[perf] tolerance``) of ``qa/gates.toml``;
export seconds, wall times of single runs rather than A/B ratios, use
``[perf.export] seconds_tolerance``. Absolute latencies are reported, not gated: they
measure the machine as much as the code.
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    from kd_convert.spec import Format

ROOT = Path(__file__).resolve().parents[3]
NAME = "export"
RESULTS = ROOT / "qa" / "perf" / "results" / f"{NAME}.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / f"{NAME}.json"
GATES = ROOT / "qa" / "gates.toml"
FORMATS: tuple[Format, ...] = ("torchscript", "exported", "onnx", "coreml")
#: mode -> (hidden sizes, sequence lengths, reference hidden size)
PLANS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "full": ((64, 128, 256), (64, 128, 256), 128),
    "quick": ((64,), (64,), 64),
}
#: Timed torch + ORT rounds per size and length: 0.3 s (hidden 64, T64) to 2.5 s (256, T256)
#: here. Many, so that a burst of load on a shared machine does not decide a median (torch
#: eager calls, Python-bound, suffer most from it).
ROUNDS = 100
GATED = ("export_seconds.", "ratio.")


def export_all(model_dir: Path, out: Path, lengths: tuple[int, ...], bar: Any) -> dict[str, Any]:
    """Export ``model_dir`` to every format; return seconds per format and the ONNX path."""
    from kd_convert.pipeline import export_model
    from kd_convert.spec import ExportSpec

    seconds, onnx_path = {}, None
    for fmt in FORMATS:
        bar.set_postfix_str(f"{model_dir.name} {fmt}")
        start = time.perf_counter()
        result = export_model(model_dir, out / fmt, ExportSpec(fmt, lengths))
        seconds[fmt] = time.perf_counter() - start
        onnx_path = result.artifact if fmt == "onnx" else onnx_path
        bar.update()
    return {"export_seconds": seconds, "onnx": onnx_path}


def interleaved_ms(
    a: Callable[[], object], b: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median milliseconds of ``a()`` and ``b()``, called alternately (2 warm-up rounds)."""
    for _ in range(2):
        a(), b()
    times_a, times_b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        times_a.append((t1 - t0) * 1e3)
        times_b.append((t2 - t1) * 1e3)
    return statistics.median(times_a), statistics.median(times_b)


def latencies(
    model_dir: Path, onnx_path: Path, lengths: tuple[int, ...], repeats: int
) -> dict[str, Any]:
    """Parameter count, and torch vs onnxruntime latency per length (one thread each)."""
    import numpy as np
    import onnxruntime
    import torch
    from kd_convert.wrapper import ExportWrapper, load_student

    model = load_student(model_dir)
    wrapper = ExportWrapper(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    torch_ms, ort_ms = {}, {}
    for length in lengths:
        ids = np.random.default_rng(0).integers(4, 300, (1, length)).astype(np.int32)
        mask = np.ones_like(ids)
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

        def torch_call(a: torch.Tensor = t_ids, b: torch.Tensor = t_mask) -> object:
            with torch.no_grad():
                return wrapper(a, b)

        def ort_call(a: np.ndarray = ids, b: np.ndarray = mask) -> object:
            return session.run(None, {"input_ids": a, "attention_mask": b})

        torch_ms[str(length)], ort_ms[str(length)] = interleaved_ms(torch_call, ort_call, repeats)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "latency_ms": {"torch": torch_ms, "onnxruntime": ort_ms},
        "ratio_ort_over_torch": {n: ort_ms[n] / torch_ms[n] for n in torch_ms},
    }


def flat_figures(size: dict[str, Any]) -> dict[str, float]:
    """One size's figures under the flat names the results and baselines have always used.

    >>> size = {"export_seconds": {"onnx": 2.0}, "ratio_ort_over_torch": {"64": 0.2},
    ...         "latency_ms": {"torch": {"64": 5.0}, "onnxruntime": {"64": 1.0}}}
    >>> for name, value in flat_figures(size).items():
    ...     print(name, value)
    export_seconds.onnx 2.0
    latency_ms.torch.T64 5.0
    latency_ms.onnxruntime.T64 1.0
    ratio.onnxruntime_over_torch.T64 0.2
    """
    figures = {f"export_seconds.{fmt}": s for fmt, s in size["export_seconds"].items()}
    for n in size["ratio_ort_over_torch"]:
        for side in ("torch", "onnxruntime"):
            figures[f"latency_ms.{side}.T{n}"] = size["latency_ms"][side][n]
        figures[f"ratio.onnxruntime_over_torch.T{n}"] = size["ratio_ort_over_torch"][n]
    return figures


def baseline_for(stored: dict[str, Any], hidden: int, reference: int) -> dict[str, float]:
    """The baseline figures of ``hidden`` from one mode's baseline entry (flat names).

    Per size under ``"sizes"``; the flat figures beside it (the only ones in an old file)
    belong to the reference size.

    >>> old = {"export_seconds.onnx": 19.5}
    >>> baseline_for(old, 64, 64), baseline_for(old, 128, 64)
    ({'export_seconds.onnx': 19.5}, {})
    """
    if str(hidden) in stored.get("sizes", {}):
        return dict(stored["sizes"][str(hidden)])
    if hidden != reference:
        return {}
    return {k: v for k, v in stored.items() if k != "sizes"}


def print_table(
    hidden: int,
    size: dict[str, Any],
    baseline: dict[str, float],
    tolerance: float,
    seconds_tolerance: float | None = None,
) -> list[str]:
    """Print one size's figures against the baseline; return its regressions.

    A gated figure (export seconds, ORT / torch ratio) regresses when figure / baseline
    exceeds ``tolerance``; export seconds use ``seconds_tolerance`` when given (they are
    wall times of one run each, not an A/B ratio, so they need a wider band).
    """
    regressions = []
    print(f"\nhidden {hidden}: {size['parameters']:,} parameters")
    print(f"{'figure':44} {'value':>10} {'baseline':>10} {'ratio':>7}")
    for name, value in flat_figures(size).items():
        base = baseline.get(name)
        ratio = value / base if base else float("nan")
        tol = tolerance
        if seconds_tolerance is not None and name.startswith("export_seconds."):
            tol = seconds_tolerance
        bad = base is not None and name.startswith(GATED) and ratio > tol
        if bad:
            regressions.append(f"hidden {hidden}: {name} {value:.3f} > {base:.3f} x {tol}")
        shown = f"{base:10.3f}" if base is not None else f"{'-':>10}"
        print(f"{name:44} {value:10.3f} {shown} {ratio:7.2f}{'  REGRESSION' if bad else ''}")
    return regressions


def tolerance() -> tuple[float, float]:
    """``(tolerance, seconds_tolerance)`` of ``[perf.export]`` (else ``[perf] tolerance``)."""
    perf = tomllib.loads(GATES.read_text(encoding="utf-8")).get("perf", {})
    ratio = float(perf.get(NAME, {}).get("tolerance", perf.get("tolerance", 1.25)))
    return ratio, float(perf.get(NAME, {}).get("seconds_tolerance", ratio))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 1 on a regression beyond tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="hidden 64, length 64 only")
    parser.add_argument("--update-baseline", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from kd_train.atomic import atomic_write_text
    from kd_train.testing import save_tiny_llama

    mode = "quick" if args.quick else "full"
    hiddens, lengths, reference = PLANS[mode]
    sizes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = Path(tmp)
        bar = tqdm(total=len(FORMATS) * (len(hiddens) + 1) + len(hiddens), desc="export bench")
        export_all(save_tiny_llama(work / "warm-up"), work / "warm-up-out", lengths[:1], bar)
        for hidden in hiddens:
            model_dir = save_tiny_llama(work / f"hidden{hidden}", hidden_size=hidden, num_layers=2)
            exported = export_all(model_dir, work / f"out{hidden}", lengths, bar)
            bar.set_postfix_str(f"hidden{hidden} latency")
            # One thread for the A/B latencies only: a fair comparison, and stable on a shared
            # machine (torch's intra-op pool collapses under oversubscription).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                timed = latencies(model_dir, exported["onnx"], lengths, ROUNDS)
            finally:
                torch.set_num_threads(threads)
            bar.update()
            sizes[str(hidden)] = {
                "hidden": hidden,
                "parameters": timed.pop("parameters"),
                "export_seconds": exported["export_seconds"],
                **timed,
            }
        bar.close()
    figures = flat_figures(sizes[str(reference)])
    results = {"mode": mode, "figures": figures, "sizes": sizes}
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
    stored = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    (tol, seconds_tol), regressions = tolerance(), []
    for key, size in sizes.items():
        base = baseline_for(stored.get(mode, {}), int(key), reference)
        regressions += print_table(int(key), size, base, tol, seconds_tol)
    if args.update_baseline:
        flat = {key: flat_figures(size) for key, size in sizes.items()}
        stored[mode] = {**figures, "sizes": flat}
        atomic_write_text(BASELINE, json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"baseline updated: {BASELINE.relative_to(ROOT)} [{mode}]")
        return 0
    for regression in regressions:
        print(f"FAIL: {regression}", file=sys.stderr)
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
