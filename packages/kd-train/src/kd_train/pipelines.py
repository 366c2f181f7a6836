"""Runnable demo pipelines: ``python -m kd_train.pipelines all --out DIR``.

The ``nox -s pipeline`` session runs this module. It grows with the packages: today it
builds a tiny teacher and student that share a tokenizer trained offline and reports how far
the untrained student is from the teacher (mean forward KL per token on the toy corpus).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kd_train.testing import DEFAULT_CORPUS, save_tiny_llama


def mean_forward_kl(teacher_dir: Path, student_dir: Path, texts: Sequence[str]) -> float:
    """Mean per-token KL(teacher || student) of two saved models over ``texts``."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")
            t = torch.log_softmax(teacher(**ids).logits.float(), dim=-1)
            s = torch.log_softmax(student(**ids).logits.float(), dim=-1)
            total += float((t.exp() * (t - s)).sum())
            count += int(ids["input_ids"].numel())
    return total / max(count, 1)


def run_all(out: Path) -> dict[str, float]:
    """Run every stage into ``out``; return the figures written to ``out/summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    teacher = save_tiny_llama(out / "teacher", seed=1, hidden_size=64, num_layers=3)
    student = save_tiny_llama(out / "student-init", seed=0)
    figures = {
        "student_init_kl": mean_forward_kl(teacher, student, DEFAULT_CORPUS),
        "seconds": time.perf_counter() - start,
    }
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    tmp.replace(out / "summary.json")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the summary figures."""
    parser = argparse.ArgumentParser(prog="python -m kd_train.pipelines")
    parser.add_argument("pipeline", choices=["all"])
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline"))
    args = parser.parse_args(argv)
    for name, value in run_all(args.out).items():
        print(f"{name:20s} {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
