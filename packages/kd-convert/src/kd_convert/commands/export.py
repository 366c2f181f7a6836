"""``kd-convert export``: export a saved student, write its contract, prove parity."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_train.cliutil import output_dir, positive_int
from rich.console import Console
from rich.table import Table

from kd_convert.errors import ExportConfigError
from kd_convert.spec import FORMATS, TASKS, TOY_LENGTHS, ExportSpec

if TYPE_CHECKING:
    from kd_convert.pipeline import ExportResult


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export", help="export a student to one format, with contract.json and parity"
    )
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    parser.add_argument("out_dir", type=output_dir, metavar="OUT_DIR")
    parser.add_argument(
        "--lengths",
        default=",".join(map(str, TOY_LENGTHS)),
        help="enumerated sequence lengths, comma separated (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument("--quantize", choices=["int8"], default=None, help="Core ML only")
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX only")
    parser.add_argument(
        "--for",
        choices=TASKS,
        default="sequence",
        dest="task",
        help="sequence: one whole-sequence graph (default); generation: prefill + decode graphs "
        "with a KV cache (onnx, exported; coreml: one stateful package)",
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="generation only: positions the KV cache may hold, prompt + new tokens "
        "(default: the model's max_position_embeddings)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, print the summary table; exit 1 if parity failed, 0 otherwise."""
    from kd_convert.pipeline import export_model

    spec = ExportSpec(
        args.fmt,
        seq_lengths=parse_lengths(args.lengths),
        batch_size=args.batch_size,
        quantize=args.quantize,
        opset=args.opset,
        task=args.task,
        max_length=args.max_length,
    )
    result = export_model(args.model_dir, args.out_dir, spec, progress=not args.no_progress)
    print(summary_table(result))
    return 1 if result.parity.status == "failed" else 0


def parse_lengths(text: str) -> tuple[int, ...]:
    """Parse ``"64,128"`` into ``(64, 128)``.

    >>> from kd_convert.commands.export import parse_lengths
    >>> parse_lengths("64, 128")
    (64, 128)
    """
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ExportConfigError(
            f"--lengths {text!r} must be comma-separated integers, e.g. 64,128,256"
        ) from exc


def summary_table(result: ExportResult, width: int = 100) -> str:
    """Return the table printed after an export: artifact, timings and parity per length."""
    contract, parity = result.contract, result.parity
    table = Table(title=f"kd-convert export: {contract.format} -> {result.artifact}")
    for column in ("length", "real tokens", "cosine", "max |Δ|", "parity"):
        table.add_column(column)
    bound = f"cos >= {parity.threshold.cosine}, max|Δ| <= {parity.threshold.max_abs:g}"
    for case in parity.results:
        table.add_row(
            str(case.length),
            str(case.n_real),
            f"{case.cosine:.6f}",
            f"{case.max_abs:.3g}",
            "passed" if case.passed else "FAILED",
        )
    tokens = parity.tokens.prompts if parity.tokens else []
    for prompt in tokens:  # generation exports: greedy ids against transformers
        table.add_row(
            f"prompt {prompt.prompt_length}",
            f"{prompt.new_tokens} new",
            f"{prompt.cosine:.6f}",
            f"{prompt.max_abs:.3g}",
            "same ids" if prompt.passed else "FAILED",
        )
    if not parity.results and not tokens:
        table.add_row("all", "-", "-", "-", parity.status)
    size = sum(p.stat().st_size for p in result.out_dir.rglob("*") if p.is_file())
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    table.caption = (
        f"parity {parity.status} ({bound}); {len(contract.files)} files, {size / 1e6:.2f} MB; "
        f"{timings}"
    )
    console = Console(file=io.StringIO(), width=width)
    console.print(table)
    return console.file.getvalue().rstrip()  # type: ignore[attr-defined]
