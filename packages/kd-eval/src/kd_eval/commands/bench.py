"""``kd-eval bench``: latency percentiles, TTFT, tokens/s and memory; targets and baselines.

Exit status: 0 when every target passes and nothing regressed against the baseline,
1 otherwise (2 for an input error, as for every command).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kd_train.atomic import atomic_write_text
from kd_train.cliutil import (
    non_negative_float,
    non_negative_int,
    output_file,
    positive_int,
)

from kd_eval.bench.baseline import compare_to_baseline, load_baseline
from kd_eval.bench.targets import check_targets, load_targets
from kd_eval.commands._common import add_output, finish
from kd_eval.stats.percentiles import MIN_SAMPLES_FOR_P99

#: Exit status when a target fails or a metric regressed beyond the tolerance.
EXIT_FAILED = 1


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench", help="latency p50/p95/p99, TTFT, tokens/s, peak memory; targets, baselines"
    )
    parser.add_argument(
        "model",
        type=Path,
        help="model directory, kd-convert export directory, .onnx, TorchScript or .pt2 file",
    )
    parser.add_argument("--seq-lens", type=_ints, default=[32, 128], help="e.g. 32,128")
    parser.add_argument("--batch-sizes", type=_ints, default=[1], help="e.g. 1,8")
    parser.add_argument(
        "--new-tokens", type=positive_int, default=8, help="tokens generated per request"
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=5, help="untimed requests per config"
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=MIN_SAMPLES_FOR_P99,
        help=f"timed requests per config (default {MIN_SAMPLES_FOR_P99}, enough for a p99)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the random prompts"
    )
    parser.add_argument("--targets", type=Path, help="per-role targets (TOML)")
    parser.add_argument("--baseline", type=Path, help="baseline JSON to compare against")
    parser.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=0.10,
        help="allowed slowdown vs the baseline (0.10)",
    )
    parser.add_argument(
        "--save-baseline", type=output_file, help="write this run as a baseline JSON"
    )
    parser.add_argument(
        "--trust-artifact",
        action="store_true",
        help="open a TorchScript or torch.export file, which unpickles it: unpickling runs any "
        "code its author put in it, so pass this only for a file you made or got from someone "
        "you trust",
    )
    add_output(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Benchmark, print the table and verdicts, write report and baseline; exit 1 on failure."""
    from kd_eval.bench.measure import BenchSettings, bench_model

    targets = load_targets(args.targets) if args.targets is not None else None
    baseline = load_baseline(args.baseline) if args.baseline is not None else None
    settings = BenchSettings(
        seq_lens=args.seq_lens,
        batch_sizes=args.batch_sizes,
        new_tokens=args.new_tokens,
        warmup=args.warmup,
        repeats=args.repeats,
        seed=args.seed,
    )
    settings.check()
    result = bench_model(
        args.model,
        settings,
        trust_artifact=args.trust_artifact,
        progress=not args.no_progress,
        log=lambda line: print(line, file=sys.stderr),
    ).to_dict()
    print(
        f"{'config':14s} {'p50 ms':>9s} {'p95 ms':>9s} {'p99 ms':>9s} {'ttft ms':>9s} "
        f"{'prefill/s':>10s} {'decode/s':>10s} {'rssΔ MiB':>9s}"
    )
    for c in result["configs"]:
        lat = c["latency_ms"]
        print(
            f"S={c['seq_len']:<5d} B={c['batch_size']:<4d} {lat['p50']:9.2f} {lat['p95']:9.2f} "
            f"{lat['p99']:9.2f} {c['ttft_ms']['p50']:9.2f} {c['prefill_tokens_per_s'] or 0:10.1f} "
            f"{c['decode_tokens_per_s'] or 0:10.1f} {c['peak_rss_delta_mb']:9.1f}"
        )
    print(
        f"percentiles over {settings.repeats} timed requests per config "
        f"after {settings.warmup} warm-up; memory: {result['memory_method']}"
    )
    failed = False
    target_rows = check_targets(result, targets) if targets is not None else None
    for row in target_rows or []:
        failed |= not row["passed"]
        verdict = "pass" if row["passed"] else "FAIL"
        value = "not measured" if row["value"] is None else f"{row['value']:.4g}"
        print(f"target {row['role']}: {row['limit']} {row['threshold']:g} -> {value} {verdict}")
    comparison = (
        compare_to_baseline(result, baseline, args.tolerance) if baseline is not None else None
    )
    for row in comparison or []:
        failed |= row["regressed"]
        mark = "REGRESSED" if row["regressed"] else "ok"
        ratio = "" if row["ratio"] is None else f"ratio {row['ratio']:.3f} "
        print(
            f"baseline S={row['seq_len']} B={row['batch_size']} {row['metric']}: "
            f"{row.get('problem') or ''}{ratio}(tolerance {args.tolerance:.0%}) {mark}"
        )
    if args.save_baseline is not None:
        atomic_write_text(args.save_baseline, json.dumps(result, indent=2) + "\n")
        print(f"wrote baseline {args.save_baseline}", file=sys.stderr)
    finish(
        args,
        Path(args.model).stem if Path(args.model).is_file() else Path(args.model).name,
        bench=result,
        targets=target_rows,
        baseline_comparison=comparison,
    )
    return EXIT_FAILED if failed else 0
