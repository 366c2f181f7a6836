"""Benchmark the distillation losses: forward + backward time and peak memory on CPU.

Forward KL and JSD(0.5) between a student and a teacher, both ``hidden -> lm_head``
(hidden 576), at several vocabulary sizes and token counts, through:

``naive``
    Full ``[tokens, vocab]`` logits of both models, then :class:`kd_train.losses.DistillationLoss`
    on them (the dense path).
``chunked``
    The same loss from hidden states + ``lm_head`` weights (our chunked path, 1,024 positions
    per chunk; 128 with ``--quick``): never more than one chunk's logits.
``liger``
    Liger-Kernel's ``LigerFusedLinearJSDLoss`` (beta 0 is forward KL), ``compiled=False``
    (its pure-PyTorch chunked path; Triton kernels need a GPU).
``torchtune``
    torchtune's ``ForwardKLWithChunkedOutputLoss`` (forward KL only; it chunks logits that
    the model has already produced, chunk by chunk, all kept).

Sizes (full mode): tokens 1,024 / 2,048 / 4,096 / 8,192 at vocabulary 32,000 and
vocabulary 8,192 / 32,000 / 49,152 at 2,048 tokens (how time and memory scale), plus
49,152 x 8,192 (the losses issue's target size). Liger and torchtune run at the two
vocabulary-49,152 sizes only.

Each configuration runs in a fresh subprocess: peak memory is the RSS high-water mark
(``resource.getrusage``) minus the RSS after imports and input creation, so runs do not
pollute each other. The gated time comes from one more process per configuration that runs
every implementation that ran, interleaved (naive, chunked, Liger, ... round after round,
best of ``TIMING_ROUNDS`` after a warm-up), so all of them see the same machine load.

The naive path needs about a dozen ``[tokens, vocab]`` float32 tensors at once, so at
49,152 x 8,192 it needs ~17 GB and the kernel kills it on a 24 GB machine. Before a naive
run the script predicts its peak from the largest naive run of the same loss already
measured (peak scales with tokens x vocab, which the smaller sizes confirm) and skips it
when the prediction exceeds ``NAIVE_MEMORY_SHARE`` of the available memory: the row then
carries ``naive_estimated_peak_mb`` and the ratio is marked ``estimated`` (reported, not
gated).

The regression check compares ratios measured in the same run with the stored baseline
``qa/perf/baselines/losses.json`` (one entry per mode), with ``[perf] tolerance`` from
``qa/gates.toml``: chunked/naive (time and memory), and where the peer ran (Liger: every
quick size, the headline sizes in full mode) naive/Liger and chunked/Liger time, so each of
our two paths is timed against a reference outside it and a slowdown of either one fails.
The full run also fails if chunked peak memory exceeds 0.25 x naive
at 8,192 tokens where naive was measured (the target); the wall-time target (<= 1.0 x
naive) is reported.

Usage: ``python bench_losses.py [--quick] [--update-baseline]``; results go to
``losses.json`` in ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it: git-ignored
``qa/reports/perf/``, or ``qa/perf/results/`` with ``--record``). ``KD_BENCH_SLOWDOWN=
losses:IMPL=N`` repeats IMPL's timed work N times: the qa tests plant a slowdown with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[3]
#: This run's figures: ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it), else
#: the git-ignored ``qa/reports/perf``; ``qa/perf/results`` changes only with ``--record``.
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / "losses.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / "losses.json"
GATES = ROOT / "qa" / "gates.toml"
HIDDEN = 576
CHUNK = 1024
QUICK_CHUNK = 128
REPEATS = 2
#: Interleaved rounds of the timing process (all implementations of a configuration).
TIMING_ROUNDS = 5
MEMORY_TARGET = 0.25
#: Skip a naive run whose predicted peak exceeds this share of MemAvailable.
NAIVE_MEMORY_SHARE = 0.6
#: Sizes where the other libraries (Liger, torchtune) are measured too.
HEADLINE = {(49152, 2048), (49152, 8192)}
IMPLS = ("naive", "chunked", "liger", "torchtune")
LOSSES = ("forward_kl", "jsd")


def sizes(quick: bool) -> list[tuple[int, int]]:
    """(vocab, tokens) pairs of a run."""
    if quick:
        return [(8192, 1024)]
    by_tokens = [(32000, n) for n in (1024, 2048, 4096, 8192)]
    by_vocab = [(8192, 2048), (49152, 2048)]
    return [*by_tokens, *by_vocab, (49152, 8192)]


def available_mb() -> float:
    """``MemAvailable`` from ``/proc/meminfo`` in MiB (infinite where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def predict_naive_mb(measured: dict[tuple[int, int], float], vocab: int, tokens: int) -> float:
    """Predict naive peak MB at ``vocab x tokens`` from the largest measured naive run.

    >>> predict_naive_mb({(32000, 2048): 1000.0, (32000, 1024): 400.0}, 32000, 8192)
    4000.0
    >>> predict_naive_mb({}, 32000, 8192)
    0.0
    """
    if not measured:
        return 0.0
    (v0, n0), peak = max(measured.items(), key=lambda item: item[0][0] * item[0][1])
    return peak * (vocab * tokens) / (v0 * n0)


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def torchtune_kd_losses() -> Any:
    """Return torchtune's kd_losses module, loaded from its file.

    torchtune's package ``__init__`` imports torchao, which is not installed here; the loss
    module itself only needs torch, so it is loaded directly (same code, no package init).
    """
    spec = importlib.util.find_spec("torchtune")
    if spec is None or spec.origin is None:
        raise RuntimeError("torchtune is not installed")
    path = Path(spec.origin).parent / "modules" / "loss" / "kd_losses.py"
    module_spec = importlib.util.spec_from_file_location("torchtune_kd_losses", path)
    if module_spec is None or module_spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def planted_slowdown(bench: str, path: str) -> int:
    """How many times ``path``'s timed work runs: 1, unless ``KD_BENCH_SLOWDOWN`` plants more.

    >>> os.environ["KD_BENCH_SLOWDOWN"] = "losses:chunked=2"
    >>> planted_slowdown("losses", "chunked"), planted_slowdown("losses", "naive")
    (2, 1)
    >>> del os.environ["KD_BENCH_SLOWDOWN"]
    """
    for item in os.environ.get("KD_BENCH_SLOWDOWN", "").split(","):
        where, _, factor = item.partition("=")
        if where == f"{bench}:{path}":
            return int(factor)
    return 1


def runner(loss: str, vocab: int, tokens: int, chunk: int, threads: int = 0) -> Any:
    """Inputs of one configuration; return ``run(impl, n)``: one forward + backward, its loss.

    ``threads``: torch threads (0: one per core).
    """
    import torch
    from kd_train.losses import DistillationLoss, LossConfig
    from kd_train.teachers import TeacherOutput

    torch.manual_seed(0)
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1)))
    h = torch.randn(tokens, HIDDEN) * 0.5
    w = (torch.randn(vocab, HIDDEN) * 0.05).requires_grad_(True)
    th = torch.randn(tokens, HIDDEN) * 0.5
    tw = torch.randn(vocab, HIDDEN) * 0.05
    labels = torch.randint(0, vocab, (1, tokens))
    beta = 0.0 if loss == "forward_kl" else 0.5
    cfg = LossConfig(divergence=loss, beta=0.5, chunk_size=chunk)
    ours = DistillationLoss(cfg)

    def run(impl: str, n: int) -> float:
        hs = h[:n].clone().requires_grad_(True)
        if impl == "naive":
            s_logits = (hs @ w.T)[None]
            with torch.no_grad():
                t_logits = (th[:n] @ tw.T)[None]
            teacher = TeacherOutput(logits=t_logits, aligned="view")
            value = ours(labels[:, :n], student_logits=s_logits, teacher=teacher)["loss"]
        elif impl == "chunked":
            value = ours(
                labels[:, :n],
                student_hidden=hs[None],
                lm_head_weight=w,
                teacher=TeacherOutput(hidden=th[:n][None], head_weight=tw, aligned="view"),
            )["loss"]
        elif impl == "liger":
            from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

            fn = LigerFusedLinearJSDLoss(
                weight_hard_loss=0.0,
                weight_soft_loss=1.0,
                beta=beta,
                compiled=False,
                chunk_size=chunk,
            )
            value = fn(hs, w, th[:n], tw, labels[0, :n])
        else:
            if loss != "forward_kl":
                raise NotImplementedError("torchtune has no chunked JSD loss")
            chunks = max(1, n // chunk)
            tt = torchtune_kd_losses().ForwardKLWithChunkedOutputLoss(num_output_chunks=chunks)
            s_chunks = [(c @ w.T)[None] for c in hs.chunk(chunks)]
            with torch.no_grad():
                t_chunks = [(c @ tw.T)[None] for c in th[:n].chunk(chunks)]
            value = tt(s_chunks, t_chunks, labels[:, :n])
        value.backward()
        w.grad = None
        return float(value.detach())

    return run


def best_seconds(run: Any, impls: list[str], tokens: int, rounds: int) -> dict[str, float]:
    """Fastest of ``rounds`` forward + backward passes per implementation, interleaved.

    Round after round each implementation runs once, so every one of them sees the same
    machine load: the ratios between them are what the gate compares.
    """
    best = {impl: float("inf") for impl in impls}
    for _ in range(rounds):
        for impl in impls:
            start = time.perf_counter()
            for _ in range(planted_slowdown("losses", impl)):
                run(impl, tokens)
            best[impl] = min(best[impl], time.perf_counter() - start)
    return best


def worker(impl: str, loss: str, vocab: int, tokens: int, chunk: int) -> dict[str, Any]:
    """Measure one implementation in this (fresh) process: peak memory, time, loss."""
    run = runner(loss, vocab, tokens, chunk)
    run(impl, min(tokens, 64))  # warm-up: kernels, allocator
    base = rss_bytes()
    value = run(impl, tokens)
    seconds = best_seconds(run, [impl], tokens, REPEATS)[impl]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_mb": max(0, peak - base) / 2**20, "loss": value}


def timing_worker(impls: list[str], loss: str, vocab: int, tokens: int, chunk: int) -> Any:
    """Time every implementation in ``impls`` in this one process, interleaved.

    The quick sizes (chunk 128) run on one thread: their passes take a tenth of a second,
    and on a shared machine two threads of many small chunks suffer from the load far more
    than one dense pass does, which would move the ratio by the load, not by the code.
    """
    run = runner(loss, vocab, tokens, chunk, threads=1 if chunk == QUICK_CHUNK else 0)
    for impl in impls:
        run(impl, min(tokens, 64))  # warm-up
    return best_seconds(run, impls, tokens, TIMING_ROUNDS)


def measure_times(impls: list[str], loss: str, vocab: int, tokens: int, chunk: int) -> Any:
    """Run :func:`timing_worker` in a fresh interpreter: ``{impl: seconds}`` or ``{}``."""
    what = [",".join(impls), loss, str(vocab), str(tokens), str(chunk)]
    cmd = [sys.executable, __file__, "--timing", *what]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}


def measure(impl: str, loss: str, vocab: int, tokens: int, chunk: int) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter; return its figures or the reason it failed."""
    cmd = [sys.executable, __file__, "--worker", impl, loss, str(vocab), str(tokens), str(chunk)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode < 0:
        # SIGKILL without a traceback is the kernel's OOM killer on Linux.
        return {"error": f"killed by signal {-proc.returncode} (out of memory?)"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"not runnable on CPU: {last[:160]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tolerance() -> float:
    """``[perf] tolerance`` (or ``[perf.losses] tolerance``) from qa/gates.toml."""
    gates = tomllib.loads(GATES.read_text())
    perf = gates.get("perf", {})
    return float(perf.get("losses", {}).get("tolerance", perf.get("tolerance", 1.25)))


def main(argv: list[str]) -> int:
    """Run the benchmark (or one worker); print the table; check targets and baseline."""
    if argv[:1] == ["--timing"]:
        impls, loss, vocab, tokens, chunk = argv[1].split(","), argv[2], *map(int, argv[3:6])
        print(json.dumps(timing_worker(impls, loss, vocab, tokens, chunk)))
        return 0
    if argv[:1] == ["--worker"]:
        impl, loss, vocab, tokens, chunk = (
            argv[1],
            argv[2],
            int(argv[3]),
            int(argv[4]),
            int(argv[5]),
        )
        print(json.dumps(worker(impl, loss, vocab, tokens, chunk)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--update-baseline", action="store_true")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    impls = ("naive", "chunked", "liger") if args.quick else IMPLS
    chunk = QUICK_CHUNK if args.quick else CHUNK
    rows: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, float]] = {}
    print(f"{'loss':<11}{'vocab':>7}{'tokens':>7}  {'impl':<10}{'time s':>9}{'peak MB':>10}")
    naive_peaks: dict[str, dict[tuple[int, int], float]] = {loss: {} for loss in LOSSES}
    configs = [(v, n, loss) for v, n in sizes(args.quick) for loss in LOSSES]
    for vocab, tokens, loss in tqdm(configs, desc="losses", unit="config", file=sys.stderr):
        key = f"{loss}/v{vocab}/t{tokens}"
        rows[key] = {}
        others = args.quick or (vocab, tokens) in HEADLINE
        for impl in impls if others else ("naive", "chunked"):
            predicted = predict_naive_mb(naive_peaks[loss], vocab, tokens)
            if impl == "torchtune" and loss != "forward_kl":
                fig: dict[str, Any] = {"error": "n/a: torchtune has no chunked JSD loss"}
            elif impl == "naive" and predicted > NAIVE_MEMORY_SHARE * available_mb():
                fig = {
                    "error": f"skipped: predicted peak {predicted:.0f} MB > "
                    f"{NAIVE_MEMORY_SHARE} x {available_mb():.0f} MB available",
                    "estimated_peak_mb": predicted,
                }
            else:
                fig = measure(impl, loss, vocab, tokens, chunk)
            if impl == "naive" and "error" not in fig:
                naive_peaks[loss][(vocab, tokens)] = fig["peak_mb"]
            rows[key][impl] = fig
            if "error" in fig:
                tqdm.write(f"{loss:<11}{vocab:>7}{tokens:>7}  {impl:<10}  {fig['error']}")
            else:
                tqdm.write(
                    f"{loss:<11}{vocab:>7}{tokens:>7}  {impl:<10}"
                    f"{fig['seconds']:>9.2f}{fig['peak_mb']:>10.0f}"
                )
        timed = [impl for impl, fig in rows[key].items() if "error" not in fig]
        if len(timed) > 1:  # the gated times: all implementations in one process, interleaved
            for impl, seconds in measure_times(timed, loss, vocab, tokens, chunk).items():
                rows[key][impl]["seconds"] = seconds
        naive, chunked = rows[key]["naive"], rows[key]["chunked"]
        if "error" not in chunked and "estimated_peak_mb" in naive:
            ratios[key] = {
                "chunked_memory_ratio_estimated": chunked["peak_mb"] / naive["estimated_peak_mb"]
            }
        elif "error" not in naive and "error" not in chunked:
            ratios[key] = {
                "chunked_time_ratio": chunked["seconds"] / naive["seconds"],
                "chunked_memory_ratio": chunked["peak_mb"] / max(naive["peak_mb"], 1e-9),
            }
            r = ratios[key]
            tqdm.write(
                f"{'':<25}chunked/naive: time {r['chunked_time_ratio']:.2f}x, "
                f"memory {r['chunked_memory_ratio']:.2f}x"
            )
        peer = rows[key].get("liger", {"error": "not run"})
        if key in ratios and "error" not in peer:
            for impl in ("naive", "chunked"):
                if "error" not in rows[key][impl]:
                    ratio = rows[key][impl]["seconds"] / peer["seconds"]
                    ratios[key][f"{impl}_over_liger_time_ratio"] = ratio
                    tqdm.write(f"{'':<25}{impl}/liger: time {ratio:.2f}x")
    failures = check_targets(ratios, args.quick)
    if not args.update_baseline:  # a new reference is not judged by the one it replaces
        failures += compare_baseline(mode, ratios, tolerance())
    write_results(mode, rows, ratios)
    if args.update_baseline:
        update_baseline(mode, ratios)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


def check_targets(ratios: dict[str, dict[str, float]], quick: bool) -> list[str]:
    """The issue's targets: memory fails the run (full mode), time is reported."""
    failures = []
    for key, r in ratios.items():
        if not key.endswith("/t8192") or "chunked_memory_ratio" not in r:
            continue
        if not quick and r["chunked_memory_ratio"] > MEMORY_TARGET:
            failures.append(
                f"{key}: chunked peak memory {r['chunked_memory_ratio']:.2f}x naive "
                f"> target {MEMORY_TARGET}x"
            )
        if r["chunked_time_ratio"] > 1.0:
            print(f"note: {key}: chunked time {r['chunked_time_ratio']:.2f}x naive > 1.0x target")
    return failures


def compare_baseline(mode: str, ratios: dict[str, dict[str, float]], tol: float) -> list[str]:
    """Ratios regress when current / baseline exceeds ``tol``."""
    if not BASELINE.exists():
        print(f"no baseline at {BASELINE.relative_to(ROOT)}; run with --update-baseline")
        return []
    stored = json.loads(BASELINE.read_text()).get(mode, {})
    failures = []
    for key, figures in ratios.items():
        for name, value in figures.items():
            base = stored.get(key, {}).get(name)
            if base and value / base > tol:
                failures.append(f"{key} {name}: {value:.3f} vs baseline {base:.3f} (> {tol}x)")
    return failures


def write_results(mode: str, rows: dict[str, Any], ratios: dict[str, Any]) -> None:
    """Write the figures of this run to ``RESULTS`` (atomically)."""
    from kd_train.atomic import atomic_write_text

    chunk = QUICK_CHUNK if mode == "quick" else CHUNK
    payload = {"mode": mode, "hidden": HIDDEN, "chunk_size": chunk, "figures": rows}
    payload["ratios"] = ratios
    payload["table"] = flat_table(rows, ratios)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def flat_table(rows: dict[str, Any], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (loss, vocab, tokens): seconds and peak MB per implementation.

    >>> flat_table({"jsd/v8/t4": {"naive": {"seconds": 1.0, "peak_mb": 9.0},
    ...                            "chunked": {"error": "x"}}}, {})
    [{'loss': 'jsd', 'vocab': 8, 'tokens': 4, 'naive_s': 1.0, 'naive_mb': 9.0}]
    """
    table = []
    for key, impls in rows.items():
        loss, vocab, tokens = key.split("/")
        row: dict[str, Any] = {"loss": loss, "vocab": int(vocab[1:]), "tokens": int(tokens[1:])}
        for impl, fig in impls.items():
            if "error" not in fig:
                row[f"{impl}_s"] = fig["seconds"]
                row[f"{impl}_mb"] = fig["peak_mb"]
            elif "estimated_peak_mb" in fig:
                row[f"{impl}_mb_estimated"] = fig["estimated_peak_mb"]
        row.update(ratios.get(key, {}))
        table.append(row)
    return table


def update_baseline(mode: str, ratios: dict[str, Any]) -> None:
    """Store this run's ratios as the baseline of ``mode`` (the other mode is kept)."""
    from kd_train.atomic import atomic_write_text

    stored = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    stored[mode] = ratios
    atomic_write_text(BASELINE, json.dumps(stored, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
