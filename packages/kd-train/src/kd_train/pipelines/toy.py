"""The ``toy`` pipeline: tool calls with spans, a trained toy teacher, a distilled student.

Stages (each a real trainer run under ``OUT/toy/``):

1. **data**: :func:`~kd_train.pipelines.toydata.tool_call_records` (deterministic), split
   into ``train.jsonl`` and ``heldout.jsonl``; a byte-level BPE tokenizer trained on them.
2. **teacher**: a tiny ``transformers`` Llama (hidden 64, 3 layers) trained with CE on the
   synthetic data, so that its distribution is a meaningful one (it has learned the tool
   names, the JSON layout and the code-mode format); it is a learned teacher, not a rule.
3. **distill**: a smaller GQA student (hidden 32, 2 layers, 2 KV heads) distilled from
   it with forward KL plus the process-step span terms (``span_tool_name``,
   ``span_json_args``) and the code-mode preference term (``code_pref``).

Figures: teacher CE before/after, student KD loss before/after, and the student's mean
per-token KL to the teacher on the held-out records before and after distillation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_train.pipelines.common import completion_kl, prepare, report, run_stage, write_summary
from kd_train.pipelines.toydata import tool_call_records


def run_toy(out: Path, *, steps: int = 150, progress: bool = True) -> dict[str, Any]:
    """Run the toy pipeline into ``out/toy``; return (and write) its figures."""
    root = out / "toy"
    records = tool_call_records(240, seed=0)
    prep = prepare(root, records, n_train=200)
    train_file, heldout = prep.train_file, prep.heldout
    teacher_init, student_init = prep.teacher_init, prep.student_init
    common: dict[str, Any] = {
        "data": {"train": str(train_file), "eval_fraction": 0.1, "max_length": 64},
        "train": {"max_steps": steps, "batch_size": 16, "eval_every": 50, "threads": 1},
    }

    teacher = run_stage(
        {
            **common,
            "student": {"path": str(teacher_init)},
            "teacher": {"kind": "none"},
            "loss": {"weights": {"ce": 1.0}},
            "optim": {"lr": 1e-2, "warmup_steps": 10},
            "output_dir": str(root / "teacher-run"),
        },
        progress,
    )
    teacher_dir = Path(teacher["student"])
    kl_before = completion_kl(teacher_dir, student_init, heldout)
    student = run_stage(
        {
            **common,
            "student": {"path": str(student_init)},
            "teacher": {"kind": "hf", "path": str(teacher_dir)},
            "loss": {
                "temperature": 1.0,
                "weights": {
                    "kd": 1.0,
                    "span_tool_name": 0.5,
                    "span_json_args": 0.5,
                    "code_pref": 0.1,
                },
                "span_loss": "kd",
            },
            "optim": {"lr": 1e-2, "warmup_steps": 10},
            "output_dir": str(root / "distill-run"),
        },
        progress,
    )
    kl_after = completion_kl(teacher_dir, Path(student["student"]), heldout)
    figures = {
        "teacher_ce_before": teacher["first"]["ce"],
        "teacher_ce_after": teacher["last"]["ce"],
        "student_kd_before": student["first"]["kd"],
        "student_kd_after": student["last"]["kd"],
        "student_heldout_kl_before": kl_before,
        "student_heldout_kl_after": kl_after,
        "teacher_dir": str(teacher_dir),
        "student_dir": student["student"],
    }
    write_summary(root / "summary.json", figures)
    report(
        "toy: tool calls with spans (teacher: tiny Llama trained on the data)",
        [
            ("teacher CE (first -> last step)", _arrow(figures, "teacher_ce")),
            ("student KD loss (first -> last step)", _arrow(figures, "student_kd")),
            (
                "student KL to teacher, held out",
                _arrow(figures, "student_heldout_kl", ("before", "after")),
            ),
            ("teacher", str(teacher_dir)),
            ("student", student["student"]),
            ("summary", str(root / "summary.json")),
        ],
    )
    return figures


def _arrow(figures: dict[str, Any], key: str, ends: tuple[str, str] = ("before", "after")) -> str:
    return f"{figures[f'{key}_{ends[0]}']:.4f} -> {figures[f'{key}_{ends[1]}']:.4f}"
