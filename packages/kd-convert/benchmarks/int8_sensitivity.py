"""How far apart may two runtimes of a dynamic-int8 student be? The student's own noise floor.

A student quantized with ``qat: {scheme: int8}`` (or ``kd-train quantize --scheme int8``)
quantizes every linear layer's input per token at run time, so its function is a staircase:
a float change of one rounding unit can move an activation to the neighbouring int8 step,
and a deep model carries that step on. This script measures, on one seeded input of
``--length`` tokens:

* **the floor**: the torchao fake-quant reference (what training computed,
  :func:`kd_convert.quantized.load_qat_student`) against itself with its input embeddings
  scaled by ``1 + 1e-6`` (a perturbation at float32 round-off);
* **the export**: the same reference against the ONNX export in onnxruntime at each graph
  optimization level: off, basic, extended (where its fused kernels come in) and its default
  (all).

Each line gives the largest absolute logit difference, the smallest per-position cosine and
the share of positions whose top-1 id agrees. Usage::

    python packages/kd-convert/benchmarks/int8_sensitivity.py STUDENT_DIR EXPORT_DIR [--length 64]

``STUDENT_DIR`` holds ``quantization.json``; ``EXPORT_DIR`` is what
``kd-convert export --format onnx STUDENT_DIR EXPORT_DIR`` wrote. Nothing is recorded: the
figures go to the QAT guide by hand, with this command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from kd_convert.parity import compare
from kd_convert.quantized import load_qat_student


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Largest |difference|, smallest per-position cosine, top-1 agreement of ``[T, V]`` rows."""
    cosine, max_abs = compare(reference, other)  # the figures kd-convert's parity checks
    return {
        "max_abs": max_abs,
        "min_cosine": cosine,
        "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the floor and the export's distance from the reference."""
    parser = argparse.ArgumentParser()
    parser.add_argument("student", type=Path)
    parser.add_argument("export", type=Path)
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    student = load_qat_student(args.student)
    if student is None:
        parser.error(f"{args.student} has no quantization.json")
    model = student.reference
    vocab = int(model.config.vocab_size)
    ids = np.random.default_rng(0).integers(3, vocab, (1, args.length))
    tokens = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(tokens)
        reference = model(inputs_embeds=embeds).logits[0].numpy()
        nudged = model(inputs_embeds=embeds * (1.0 + 1e-6)).logits[0].numpy()
    rows = {"floor: reference vs its input x (1 + 1e-6)": agreement(reference, nudged)}
    onnx_file = next(args.export.glob("*.onnx"))
    feeds = {"input_ids": ids.astype(np.int32), "attention_mask": np.ones_like(ids, np.int32)}
    for name, level in (
        ("onnxruntime, optimizations off", onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL),
        ("onnxruntime, basic", onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        ("onnxruntime, extended (fusions)", onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
        ("onnxruntime, default (all)", onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ):
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        logits = np.asarray(session.run(None, feeds)[0])[0, : args.length]
        rows[f"export: {name}"] = agreement(reference, logits)
    print(f"{'':<48}{'max |d|':>10}{'min cos':>10}{'top-1 agree':>13}")
    for name, row in rows.items():
        print(
            f"{name:<48}{row['max_abs']:>10.3f}{row['min_cosine']:>10.4f}"
            f"{row['top1_agreement']:>13.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
