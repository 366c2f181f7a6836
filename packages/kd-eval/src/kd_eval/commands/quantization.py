r"""``kd-eval quantization``: the fp32, post-training-quantized and QAT students of one run.

Scores the three arms against the teacher on the same held-out records (forward KL, top-1
agreement, the paired KL difference to fp32, the share of PTQ's loss that QAT recovers;
:mod:`kd_eval.quantization.compare`), optionally their task metric, and, from the ONNX
files ``kd-convert export`` wrote, their size and onnxruntime latency
(:mod:`kd_eval.quantization.footprint`). Prints a table, writes the report (``--out``) and a
PNG (``--png``).

Example::

    kd-eval quantization --teacher runs/teacher --fp32 runs/fp32/student \\
        --qat runs/qat/student --data heldout.jsonl --onnx fp32=x/fp32 --onnx ptq=x/ptq \\
        --onnx qat=x/qat --out quantization.json --png quantization.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd_train.cliutil import output_file, positive_int

from kd_eval.commands._common import add_bootstrap, add_output, finish


def register(subparsers: Any) -> None:
    """Add the ``quantization`` subcommand."""
    parser = subparsers.add_parser(
        "quantization",
        help="fp32 vs post-training-quantized vs QAT students: fidelity, task, size, latency",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument(
        "--teacher", type=Path, required=True, help="teacher model directory or .gguf file"
    )
    parser.add_argument("--fp32", type=Path, required=True, help="the float student's directory")
    parser.add_argument(
        "--qat", type=Path, help="the QAT student's directory (its quantization.json: the scheme)"
    )
    parser.add_argument(
        "--scheme",
        choices=("int8", "int4"),
        help="the scheme PTQ applies when no --qat is given (else the QAT student's)",
    )
    parser.add_argument(
        "--group-size", type=int, choices=(32, 64), help="int4: weights per scale (default 32)"
    )
    parser.add_argument("--data", type=Path, required=True, help="held-out JSONL of KD records")
    task = parser.add_mutually_exclusive_group()
    task.add_argument(
        "--classify",
        metavar="LABELS",
        help="also classify: a known label set (8ball) or a file with one label per line",
    )
    task.add_argument("--toolcalls", action="store_true", help="also score tool calls")
    parser.add_argument(
        "--task-data", type=Path, help="JSONL for the task metric (default: --data)"
    )
    parser.add_argument(
        "--onnx",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an arm's ONNX export (NAME: fp32, ptq or qat; PATH: the .onnx file or the "
        "kd-convert export directory); its size and latency are measured",
    )
    parser.add_argument(
        "--length", type=positive_int, default=64, help="tokens per latency run (64)"
    )
    parser.add_argument("--runs", type=positive_int, default=30, help="timed latency runs (30)")
    parser.add_argument("--png", type=output_file, help="write the plot (PNG) to this file")
    add_bootstrap(parser)
    add_output(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the inputs, compare the arms, print the table, write the report and the plot."""
    from kd_train.atomic import atomic_write_bytes

    from kd_eval.commands.classify import resolve_labels
    from kd_eval.errors import ConfigError
    from kd_eval.loading.data import read_eval_set
    from kd_eval.quantization.run import (
        TaskKind,
        evaluate_quantization,
        parse_onnx,
        task_runner,
    )
    from kd_eval.report.plots import quantization_png

    onnx = parse_onnx(args.onnx, have_qat=args.qat is not None)
    labels = resolve_labels(args.classify) if args.classify is not None else []
    records = read_eval_set(args.data)
    kind: TaskKind | None = None
    if args.classify is not None or args.toolcalls:
        kind = "classification" if args.classify is not None else "toolcalls"
    if args.task_data is not None and kind is None:
        raise ConfigError("--task-data is the task metric's data: add --classify or --toolcalls")
    task_records = records if args.task_data is None else read_eval_set(args.task_data)
    section = evaluate_quantization(
        args.teacher,
        args.fp32,
        args.qat,
        records,
        data=str(args.data),
        scheme=args.scheme,
        group_size=args.group_size,
        onnx=onnx,
        length=args.length,
        runs=args.runs,
        task=task_runner(kind, task_records, labels, progress=not args.no_progress),
        progress=not args.no_progress,
        resamples=args.resamples,
        seed=args.seed,
        confidence=args.confidence,
    )
    print(table(section))
    if args.png is not None:
        atomic_write_bytes(args.png, quantization_png(section))
    finish(args, Path(args.fp32).name, quantization=section)
    return 0


def table(section: dict[str, Any]) -> str:
    """The printed table: one row per arm, then the recovered share per metric."""

    def interval(est: dict[str, Any] | None, sign: str = "") -> str:
        if est is None:
            return "-"
        return f"{est['value']:{sign}.4f} [{est['low']:{sign}.4f}, {est['high']:{sign}.4f}]"

    scheme = section["scheme"]
    lines = [
        f"{section['n_examples']} held-out records; scheme {scheme['scheme']}"
        + (f" (group {scheme['group_size']})" if scheme["group_size"] else "")
        + f" from {scheme['source']}",
        f"{'arm':<5}{'forward KL':>27}{'top-1':>27}{'KL - fp32 (paired)':>30}"
        f"{'task':>8}{'weights KiB':>12}{'file KiB':>10}{'ms':>8}",
    ]
    for name, arm in section["arms"].items():
        task = arm["task"]
        task_text = "-"
        if task is not None:  # the headline figure: accuracy, or tool-name accuracy
            first = "accuracy" if task["kind"] == "classification" else "tool_name_accuracy"
            task_text = f"{task[first]:.3f}"
        onnx = arm["onnx"]
        size = (
            f"{onnx['weight_bytes'] / 1024:>12.1f}{onnx['file_bytes'] / 1024:>10.1f}"
            f"{onnx['latency_ms']:>8.2f}"
            if onnx
            else f"{'-':>12}{'-':>10}{'-':>8}"
        )
        lines.append(
            f"{name:<5}{interval(arm['forward_kl']):>27}{interval(arm['top1_agreement']):>27}"
            f"{interval(arm['kl_vs_fp32'], '+'):>30}{task_text:>8}{size}"
        )
    for metric, rec in section["recovered"].items():
        value = "null" if rec["value"] is None else f"{rec['value']:.3f}"
        reason = f" ({rec['reason']})" if rec["reason"] else ""
        lines.append(f"recovered {metric}: {value}{reason}")
    return "\n".join(lines)
