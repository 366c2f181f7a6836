"""The ``8-ball`` pipeline: a Magic 8-Ball classifier student distilled from a teacher.

Questions come from a small grammar (``Will <subject> <verb> <when>?``); the answer is one
of the twenty classic replies, picked by a rule over the verb and the time
(:func:`~kd_train.pipelines.toydata.eight_ball_answer`), so held-out questions (unseen
subjects/verb/time combinations) have well-defined answers.

Stages under ``OUT/8-ball/``: a tiny Llama teacher trained with CE on the training
questions; a smaller GQA student distilled from it (forward KL). Figures: teacher and
student accuracy on held-out questions (the label with the highest log-likelihood
after the prompt), student before and after, and the student's KL to the teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_train.data.labels import MAGIC_8_BALL_ANSWERS
from kd_train.pipelines.common import (
    completion_kl,
    label_accuracy,
    prepare,
    report,
    run_stage,
    write_summary,
)
from kd_train.pipelines.toydata import eight_ball_records


def run_eight_ball(out: Path, *, steps: int = 200, progress: bool = True) -> dict[str, Any]:
    """Run the 8-ball pipeline into ``out/8-ball``; return (and write) its figures."""
    root = out / "8-ball"
    records = eight_ball_records(seed=0)
    prep = prepare(root, records, n_train=200)
    train_file, heldout = prep.train_file, prep.heldout
    teacher_init, student_init = prep.teacher_init, prep.student_init
    common: dict[str, Any] = {
        "data": {"train": str(train_file), "eval_fraction": 0.1, "max_length": 32},
        "train": {"max_steps": steps, "batch_size": 16, "eval_every": 50, "threads": 1},
        "optim": {"lr": 1e-2, "warmup_steps": 10},
    }
    teacher = run_stage(
        {
            **common,
            "student": {"path": str(teacher_init)},
            "teacher": {"kind": "none"},
            "loss": {"weights": {"ce": 1.0}},
            "output_dir": str(root / "teacher-run"),
        },
        progress,
    )
    teacher_dir = Path(teacher["student"])
    student = run_stage(
        {
            **common,
            "student": {"path": str(student_init)},
            "teacher": {"kind": "hf", "path": str(teacher_dir)},
            "loss": {"weights": {"kd": 1.0}},
            "output_dir": str(root / "distill-run"),
        },
        progress,
    )
    student_dir = Path(student["student"])
    figures = {
        "teacher_heldout_accuracy": label_accuracy(teacher_dir, heldout, MAGIC_8_BALL_ANSWERS),
        "student_heldout_accuracy_before": label_accuracy(
            student_init, heldout, MAGIC_8_BALL_ANSWERS
        ),
        "student_heldout_accuracy_after": label_accuracy(
            student_dir, heldout, MAGIC_8_BALL_ANSWERS
        ),
        "student_heldout_kl_before": completion_kl(teacher_dir, student_init, heldout),
        "student_heldout_kl_after": completion_kl(teacher_dir, student_dir, heldout),
        "student_kd_before": student["first"]["kd"],
        "student_kd_after": student["last"]["kd"],
        "teacher_dir": str(teacher_dir),
        "student_dir": str(student_dir),
    }
    write_summary(root / "summary.json", figures)
    f = figures
    report(
        "8-ball: Magic 8-Ball classifier (teacher: tiny Llama trained on the rule)",
        [
            ("teacher accuracy, held out", f"{f['teacher_heldout_accuracy']:.3f}"),
            (
                "student accuracy, held out",
                f"{f['student_heldout_accuracy_before']:.3f} -> "
                f"{f['student_heldout_accuracy_after']:.3f}",
            ),
            (
                "student KL to teacher, held out",
                f"{f['student_heldout_kl_before']:.4f} -> {f['student_heldout_kl_after']:.4f}",
            ),
            ("student KD loss", f"{f['student_kd_before']:.4f} -> {f['student_kd_after']:.4f}"),
            ("student", str(student_dir)),
            ("summary", str(root / "summary.json")),
        ],
    )
    return figures
