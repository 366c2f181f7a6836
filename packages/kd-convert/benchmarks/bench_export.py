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

``export.json`` (in ``$KD_PERF_RESULTS``: ``qa/reports/perf`` unless ``python -m qa.perf
bench --record``): ``{"mode", "figures": {flat figures of the reference size
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

Decode speed (``"decode"`` in the results; ``--skip-decode`` leaves it out): a 2-layer
student (hidden 128; ``--quick``: 64) with room for 1,024 + 64 positions is exported
``--for generation`` and as the whole-sequence graph, to ONNX (onnxruntime) and to
``torch.export``. Per prompt length (64 / 256 / 1024; ``--quick``: 64 / 256) and runtime, with
one thread: time to first token (the prefill) and decode tokens/s of 64 greedy tokens with
the KV cache, against the whole-sequence export recomputing the prefix for every token
(one warm-up, then the median of ``DECODE_ROUNDS`` runs each, interleaved). Gated:
``ratio.cached_over_uncached.<runtime>.T<n>`` (seconds per new token with the cache over
without; lower is better),
against ``{mode: {"decode": {...}}}`` of the baseline. The scaling plot is
``export_decode.png`` in ``$KD_PERF_CHARTS`` (``docs/_static/perf`` with ``--record``).

A pipeline's student (``--student NAME=DIR``, repeatable; a directory written by
``save_pretrained``, such as the distilled student of ``python -m kd_train.pipelines toy``)
gets the same decode measurement instead of the tiny random student, and nothing else runs.
A student whose ``max_position_embeddings`` is below the longest prompt + new tokens is
measured on a copy with the limit raised (same weights; beyond its trained positions its
outputs mean nothing, its timings are the same). Results go to
``export_decode_students.json`` (``{"mode", "new_tokens", "students":
{name: {model figures}}, "rows": [{"student", "runtime", "prompt", decode figures}]}``),
the plot to ``export_decode_speedup.png``, next to the others; not gated (no baseline)::

    python packages/kd-convert/benchmarks/bench_export.py --student toy=STUDENT_DIR
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
#: This run's figures: ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it), else
#: the git-ignored ``qa/reports/perf``; ``qa/perf/results`` changes only with ``--record``.
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / f"{NAME}.json"
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
#: Decode bench: prompt lengths per mode, new tokens, timed runs per arm.
DECODE_LENGTHS = {"full": (64, 256, 1024), "quick": (64, 256)}
DECODE_HIDDEN = {"full": 128, "quick": 64}
NEW_TOKENS = 64
DECODE_ROUNDS = 5
#: This run's charts: ``$KD_PERF_CHARTS``, else ``charts/`` next to the figures.
CHARTS = Path(os.environ.get("KD_PERF_CHARTS") or OUT / "charts")
DECODE_PLOT = CHARTS / "export_decode.png"
STUDENTS_RESULTS = OUT / "export_decode_students.json"
STUDENTS_PLOT = CHARTS / "export_decode_speedup.png"


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


def save_decode_student(path: Path, hidden: int, max_positions: int) -> Path:
    """A random 2-layer GQA Llama whose context holds the longest prompt + new tokens."""
    from kd_train.models import llama_config, save_random_llama, train_tokenizer

    tokenizer = train_tokenizer(vocab_size=320)
    config = llama_config(len(tokenizer), hidden_size=hidden, max_position_embeddings=max_positions)
    return save_random_llama(path, config, tokenizer, seed=0)


def uncached_generate(graph: Callable[..., Any], prompt: list[int], new_tokens: int) -> Any:
    """Greedy generation through a whole-sequence graph: the prefix recomputed per token."""
    import numpy as np

    ids = list(prompt)
    start = time.perf_counter()
    first = 0.0
    for step in range(new_tokens):
        row = np.asarray([ids], dtype=np.int32)
        logits = graph(row, np.ones_like(row))
        ids.append(int(np.argmax(logits[0, -1])))
        first = time.perf_counter() - start if step == 0 else first
    return first, time.perf_counter() - start - first


def decode_speed(work: Path, mode: str) -> dict[str, Any]:
    """TTFT and decode tokens/s with and without the KV cache, per runtime and prompt length."""
    lengths = DECODE_LENGTHS[mode]
    longest = lengths[-1] + NEW_TOKENS
    model_dir = save_decode_student(work / "decode-student", DECODE_HIDDEN[mode], longest)
    return {
        "hidden": DECODE_HIDDEN[mode],
        "new_tokens": NEW_TOKENS,
        **measure_decode(model_dir, work, lengths),
    }


def measure_decode(model_dir: Path, work: Path, lengths: tuple[int, ...]) -> dict[str, Any]:
    """Decode figures of the student in ``model_dir``, per runtime and prompt length.

    Exports it ``--for generation`` (cache for the longest prompt + ``NEW_TOKENS``) and as the
    whole-sequence graph into ``work``; one thread. Returns ``cache_bytes_per_token``,
    ``model_bytes`` and ``{runtime: {length: figures}}``.
    """
    import numpy as np
    import torch
    from kd_convert.formats import exported, onnx
    from kd_convert.generate import generate, load_stepper
    from kd_convert.pipeline import export_model
    from kd_convert.spec import ExportSpec

    longest = lengths[-1] + NEW_TOKENS
    vocab = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    runtimes = {"onnxruntime": ("onnx", onnx), "torch_export": ("exported", exported)}
    figures: dict[str, Any] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for runtime, (fmt, module) in runtimes.items():
            spec = ExportSpec(fmt, (8, 16), task="generation", max_length=longest)
            gen = export_model(model_dir, work / f"gen-{fmt}", spec)
            seq = export_model(model_dir, work / f"seq-{fmt}", ExportSpec(fmt, (8, longest)))
            stepper = load_stepper(gen.out_dir, threads=1, trust_artifact=True)
            whole = _one_thread_graph(module, seq.artifact)
            figures["cache_bytes_per_token"] = (gen.contract.cache or {})["bytes_per_token"]
            if fmt == "exported":  # fp32 weights + graph: the model's size on disk
                figures["model_bytes"] = seq.artifact.stat().st_size
            by_length: dict[str, Any] = {}
            for n in lengths:
                prompt = np.random.default_rng(n).integers(4, min(300, vocab), n).tolist()
                cached, uncached = [], []
                generate(stepper, prompt, 2)  # warm-up: first call of each shape
                uncached_generate(whole, prompt, 2)
                for _ in range(DECODE_ROUNDS):
                    out = generate(stepper, prompt, NEW_TOKENS, stop_at_eos=False)
                    cached.append((out.first_token_seconds, out.decode_seconds))
                    uncached.append(uncached_generate(whole, prompt, NEW_TOKENS))
                by_length[str(n)] = _decode_figures(cached, uncached)
            figures[runtime] = by_length
    finally:
        torch.set_num_threads(threads)
    return figures


def widened_student(model_dir: Path, dest: Path, positions: int) -> Path:
    """``model_dir``, or a copy in ``dest`` whose ``max_position_embeddings`` holds ``positions``.

    The copy has the same weights; the exports refuse a cache longer than that limit.
    """
    import shutil

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config["max_position_embeddings"] >= positions:
        return model_dir
    shutil.copytree(model_dir, dest)
    config["max_position_embeddings"] = positions
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return dest


def student_decode(students: dict[str, Path], work: Path, mode: str) -> dict[str, Any]:
    """The decode measurement on each named student directory (``--student``)."""
    lengths = DECODE_LENGTHS[mode]
    longest = lengths[-1] + NEW_TOKENS
    results: dict[str, Any] = {"mode": mode, "new_tokens": NEW_TOKENS, "students": {}, "rows": []}
    for name, model_dir in students.items():
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        measured_dir = widened_student(model_dir, work / f"{name}-widened", longest)
        measured = measure_decode(measured_dir, work / name, lengths)
        results["students"][name] = {
            "directory": str(model_dir),
            "hidden": config["hidden_size"],
            "layers": config["num_hidden_layers"],
            "vocab": config["vocab_size"],
            "max_position_embeddings": config["max_position_embeddings"],
            "model_bytes": measured["model_bytes"],
            "cache_bytes_per_token": measured["cache_bytes_per_token"],
        }
        for runtime in ("onnxruntime", "torch_export"):
            for n, row in measured[runtime].items():
                results["rows"].append({"student": name, "runtime": runtime, "prompt": int(n)})
                results["rows"][-1].update(row)
    return results


def plot_student_decode(results: dict[str, Any], path: Path = STUDENTS_PLOT) -> None:
    """Cached over uncached decode speedup against prompt length, per student and runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in results["students"]:
        for runtime, style in (("onnxruntime", "o-"), ("torch_export", "s--")):
            rows = [r for r in results["rows"] if (r["student"], r["runtime"]) == (name, runtime)]
            xs = [r["prompt"] for r in rows]
            ax.plot(xs, [r["speedup"] for r in rows], style, label=f"{name}, {runtime}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel(f"decode speedup, cache / no cache ({NEW_TOKENS} new, 1 thread)")
    ax.set_title("KV-cache decode speedup of the pipelines' students")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def student_arg(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` of ``--student``.

    >>> student_arg("toy=/tmp/toy/student")
    ('toy', PosixPath('/tmp/toy/student'))
    """
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(directory)


def _one_thread_graph(module: Any, path: Path) -> Callable[..., Any]:
    if module.__name__.endswith("onnx"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    runner: Callable[..., Any] = module.load_runner(path, trust_artifact=True)
    return runner


def _decode_figures(
    cached: list[tuple[float, float]], uncached: list[tuple[float, float]]
) -> dict[str, float]:
    steps = NEW_TOKENS - 1
    c_ttft, c_decode = (statistics.median(x) for x in zip(*cached, strict=True))
    u_ttft, u_decode = (statistics.median(x) for x in zip(*uncached, strict=True))
    return {
        "ttft_ms.cached": c_ttft * 1e3,
        "ttft_ms.uncached": u_ttft * 1e3,
        "decode_tokens_per_s.cached": steps / c_decode,
        "decode_tokens_per_s.uncached": steps / u_decode,
        "speedup": u_decode / c_decode,
    }


def decode_flat(decode: dict[str, Any]) -> dict[str, float]:
    """The decode figures under flat names; ``ratio.cached_over_uncached.*`` are gated.

    >>> decode = {"hidden": 64, "onnxruntime": {"64": {"speedup": 4.0, "ttft_ms.cached": 1.0}}}
    >>> decode_flat(decode)
    {'onnxruntime.T64.speedup': 4.0, 'onnxruntime.T64.ttft_ms.cached': 1.0, \
'ratio.cached_over_uncached.onnxruntime.T64': 0.25}
    """
    flat: dict[str, float] = {}
    for runtime, by_length in decode.items():
        if not isinstance(by_length, dict):
            continue
        for n, figures in by_length.items():
            flat.update({f"{runtime}.T{n}.{k}": v for k, v in figures.items()})
            flat[f"ratio.cached_over_uncached.{runtime}.T{n}"] = 1.0 / figures["speedup"]
    return flat


def plot_decode(decode: dict[str, Any], path: Path = DECODE_PLOT) -> None:
    """Decode tokens/s against prompt length, with and without the cache, per runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for runtime, by_length in decode.items():
        if not isinstance(by_length, dict):
            continue
        lengths = sorted(by_length, key=int)
        for arm, style in (("cached", "o-"), ("uncached", "s--")):
            speeds = [by_length[n][f"decode_tokens_per_s.{arm}"] for n in lengths]
            ax.plot([int(n) for n in lengths], speeds, style, label=f"{runtime}, {arm}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel(f"decode tokens/s ({NEW_TOKENS} new, 1 thread)")
    ax.set_title(f"KV-cache decode vs whole-sequence recompute (hidden {decode['hidden']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_decode(decode: dict[str, Any], baseline: dict[str, float], tol: float) -> list[str]:
    """Print the decode figures against the baseline; return the gated regressions."""
    regressions = []
    print(f"\ndecode (hidden {decode['hidden']}, {NEW_TOKENS} new tokens, 1 thread)")
    for name, value in decode_flat(decode).items():
        base = baseline.get(name)
        ratio = value / base if base else float("nan")
        bad = base is not None and name.startswith("ratio.") and ratio > tol
        if bad:
            regressions.append(f"decode: {name} {value:.3f} > {base:.3f} x {tol}")
        shown = f"{base:10.3f}" if base is not None else f"{'-':>10}"
        print(f"{name:52} {value:10.3f} {shown} {ratio:7.2f}{'  REGRESSION' if bad else ''}")
    return regressions


def print_student_decode(results: dict[str, Any]) -> None:
    """Print one line per student, runtime and prompt length."""
    for name, model in results["students"].items():
        print(f"\n{name}: {model}")
    print(
        f"{'student':10} {'runtime':13} {'prompt':>6} {'TTFT ms':>9} {'tok/s':>9} "
        f"{'no cache':>9} {'speedup':>8}"
    )
    for r in results["rows"]:
        print(
            f"{r['student']:10} {r['runtime']:13} {r['prompt']:6} {r['ttft_ms.cached']:9.1f} "
            f"{r['decode_tokens_per_s.cached']:9.0f} {r['decode_tokens_per_s.uncached']:9.1f} "
            f"{r['speedup']:7.1f}x"
        )


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
    parser.add_argument("--skip-decode", action="store_true", help="no decode-speed section")
    parser.add_argument(
        "--student",
        type=student_arg,
        action="append",
        metavar="NAME=DIR",
        help="measure decode speed on this student directory only (repeatable; not gated)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from kd_train.atomic import atomic_write_text
    from kd_train.testing import save_tiny_llama

    mode = "quick" if args.quick else "full"
    if args.student:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            students = student_decode(dict(args.student), Path(tmp), mode)
        STUDENTS_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(STUDENTS_RESULTS, json.dumps(students, indent=2) + "\n")
        plot_student_decode(students)
        print_student_decode(students)
        return 0
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
        decode = None if args.skip_decode else decode_speed(work, mode)
    figures = flat_figures(sizes[str(reference)])
    results: dict[str, Any] = {"mode": mode, "figures": figures, "sizes": sizes}
    if decode is not None:
        results["decode"] = decode
        plot_decode(decode)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
    stored = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    (tol, seconds_tol), regressions = tolerance(), []
    for key, size in sizes.items():
        base = baseline_for(stored.get(mode, {}), int(key), reference)
        regressions += print_table(int(key), size, base, tol, seconds_tol)
    if decode is not None:
        regressions += print_decode(decode, stored.get(mode, {}).get("decode", {}), tol)
    if args.update_baseline:
        flat = {key: flat_figures(size) for key, size in sizes.items()}
        old_decode = stored.get(mode, {}).get("decode")
        stored[mode] = {**figures, "sizes": flat}
        if decode is not None or old_decode:
            stored[mode]["decode"] = decode_flat(decode) if decode is not None else old_decode
        atomic_write_text(BASELINE, json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"baseline updated: {BASELINE.relative_to(ROOT)} [{mode}]")
        return 0
    for regression in regressions:
        print(f"FAIL: {regression}", file=sys.stderr)
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
