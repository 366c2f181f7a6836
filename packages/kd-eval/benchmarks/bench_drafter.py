"""The toy student as its teacher's speculative drafter, before and after distillation.

Runs the toy pipeline (``kd_train.pipelines.toy``: a trained toy teacher, an untrained
student and the student distilled from the teacher), then measures both students as the
teacher's drafter on the toy held-out prompts with :func:`kd_eval.drafter.run.evaluate_drafter`,
the function behind ``kd-eval drafter``: acceptance rate, tokens per teacher forward and
wall-clock speedup against the teacher alone, each with a 95% bootstrap interval over
prompts, and how many greedy outputs equal the teacher's own. Fails (exit 1) unless
distillation raises the acceptance rate with intervals that do not overlap and every output
is the teacher's.

Usage: ``python bench_drafter.py [--quick]`` (quick: one timed run per prompt instead of the
fastest of three); results go to ``qa/perf/results/drafter.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from kd_eval.drafter.run import evaluate_drafter
from kd_eval.loading.data import read_eval_set
from kd_eval.loading.models import load_model
from kd_train.pipelines.toy import run_toy

NAME = "drafter"
ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "qa" / "perf" / "results" / f"{NAME}.json"
MAX_NEW_TOKENS, DRAFT_TOKENS = 48, 5


def interval(estimate: Any) -> str:
    """``[low, high]`` of an estimate, three decimals."""
    return f"[{estimate.low:.3f}, {estimate.high:.3f}]"


def measure(repeats: int) -> dict[str, dict[str, Any]]:
    """Distil the toy student, then measure it as a drafter before and after."""
    with tempfile.TemporaryDirectory(prefix="kd-bench-drafter-") as tmp:
        toy = run_toy(Path(tmp), progress=False)
        records = read_eval_set(Path(tmp) / "toy" / "data" / "heldout.jsonl")
        teacher = load_model(toy["teacher_dir"])
        students = {"before": Path(tmp) / "toy" / "student-init", "after": toy["student_dir"]}
        figures = {}
        for when, student in students.items():
            result = evaluate_drafter(
                teacher,
                load_model(student),
                records,
                max_new_tokens=MAX_NEW_TOKENS,
                draft_tokens=DRAFT_TOKENS,
                repeats=repeats,
            )
            agg = result.aggregate
            figures[when] = {
                "acceptance rate": agg["acceptance_rate"].value,
                "acceptance 95% CI": interval(agg["acceptance_rate"]),
                "tokens / teacher forward": agg["tokens_per_teacher_forward"].value,
                "tokens 95% CI": interval(agg["tokens_per_teacher_forward"]),
                "speedup": agg["speedup"].value,
                "speedup 95% CI": interval(agg["speedup"]),
                "identical outputs": f"{result.n_identical}/{len(records)}",
                "acceptance low": agg["acceptance_rate"].low,
                "acceptance high": agg["acceptance_rate"].high,
                "all identical": result.n_identical == len(records),
            }
        return figures


def check(figures: dict[str, dict[str, Any]]) -> list[str]:
    """One line per failed expectation: acceptance raised beyond its interval, outputs kept."""
    before, after = figures["before"], figures["after"]
    failures = []
    if not after["acceptance low"] > before["acceptance high"]:
        failures.append("distillation did not raise the acceptance rate beyond its interval")
    for when, row in figures.items():
        if not row["all identical"]:
            failures.append(f"{when}: assisted outputs differ from the teacher's own")
    return failures


def main(argv: list[str]) -> int:
    """Measure, write the results file, print the table; 1 if distillation did not help."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one timed run per prompt")
    args, _ = parser.parse_known_args(argv)
    repeats = 1 if args.quick else 3
    figures = measure(repeats)
    results = {
        "benchmark": NAME,
        "mode": "quick" if args.quick else "full",
        "settings": {
            "max_new_tokens": MAX_NEW_TOKENS,
            "draft_tokens": DRAFT_TOKENS,
            "repeats": repeats,
        },
        "figures": figures,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\ntoy student as the toy teacher's drafter (K={DRAFT_TOKENS}, {MAX_NEW_TOKENS} tokens)")
    for when, row in figures.items():
        print(
            f"{when:<7} acceptance {row['acceptance rate']:.3f} {row['acceptance 95% CI']}  "
            f"tokens/forward {row['tokens / teacher forward']:.2f}  "
            f"speedup {row['speedup']:.2f}x {row['speedup 95% CI']}  "
            f"identical {row['identical outputs']}"
        )
    failures = check(figures)
    for line in failures:
        print(f"REGRESSION {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
