"""Evidence for cross-tokenizer distillation: ``uld`` vs ``align`` vs CE-only at equal steps.

Teacher: SmolLM2-135M-Instruct (``kd_train.pipelines.smollm2.smollm2_teacher``, vocabulary
49,152), saved as a ``transformers`` model. Student: a small random GQA Llama with **its own**
byte-level BPE tokenizer of 8,192 entries trained offline (``kd_train.models.train_tokenizer``)
on the training text and the prose of the Python standard library's docstrings (PSF-2.0;
``showcase.stdlib_sentences``), the same kind of English text, none of it a held-out record:
the 600 training sentences alone support only about 3,700 entries. Data: sentences of the
installed ``kd_train`` docstrings (``local_text_records``), first half prompt, second half
completion; the held-out
records are disjoint from the training rows by content
(:func:`kd_train.pipelines.common.split_held_out`).

Three arms from the same initial student, data order and number of optimiser steps, through
``kd-train``'s own trainer:

``ce``     ``loss.weights: {ce: 1}`` (no teacher);
``uld``    ``{ce: 1, kd: 1}`` with ``loss.cross_tokenizer.method: uld``;
``align``  ``{ce: 1, kd: 1}`` with ``method: align`` (exact KL on the shared ids + ULD).

Measured on the held-out records with ``kd-eval fidelity``'s text-level figures
(:mod:`kd_eval.fidelity.text_level`), bootstrap 95% intervals over examples: the student's
**bits per byte** of the completion (lower is better; the teacher's is the floor) and the
text-level top-1 agreement with the teacher; ``vs_ce``: each KD arm's paired per-example
difference to CE-only.

It also checks our ULD against TRL's GOLD ``ULDLoss`` (``trl.experimental.gold``; the
``bench`` dependency group, not a test dependency) on the same inputs: the final ``uld``
student's and the teacher's logits on held-out records, positions paired by index as in
TRL's plain ULD, and reports the largest difference.

Usage: ``python packages/kd-eval/benchmarks/evidence_cross_tokenizer.py [--steps N]
[--record]``. Figures print as a table; ``--record`` writes
``qa/perf/results/cross_tokenizer.json`` and ``docs/_static/perf/cross_tokenizer.png``
(the cross-tokenizer guide shows them); without it they go to ``qa/reports/perf/`` (or
``$KD_PERF_RESULTS`` and ``$KD_PERF_CHARTS``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence_on_policy import interval_bars, output_dirs, save_teacher_model
from showcase import stdlib_sentences

ARMS: dict[str, dict[str, Any]] = {
    "ce": {"weights": {"ce": 1.0}},
    "uld": {"weights": {"ce": 1.0, "kd": 1.0}, "cross_tokenizer": {"method": "uld"}},
    "align": {"weights": {"ce": 1.0, "kd": 1.0}, "cross_tokenizer": {"method": "align"}},
}
STUDENT_VOCAB = 8192
#: Standard-library sentences added to the student tokenizer's training text.
TOKENIZER_SENTENCES = 12_000
N_RECORDS, N_HELDOUT = 660, 60


def setup(work: Path) -> dict[str, Any]:
    """The teacher saved as a model dir, the student's own tokenizer and model, the data."""
    from kd_train.models import llama_config, save_random_llama, train_tokenizer
    from kd_train.pipelines.common import split_held_out
    from kd_train.pipelines.smollm2 import local_text_records, smollm2_teacher
    from kd_train.pipelines.toydata import write_jsonl

    teacher = smollm2_teacher()
    teacher_dir = save_teacher_model(teacher, work / "teacher")
    records = local_text_records(N_RECORDS)
    train, heldout = split_held_out(records, len(records) - N_HELDOUT, teacher.tokenizer)
    held = {r.prompt + r.completion for r in heldout}
    extra = [r.prompt + r.completion for r in stdlib_sentences(TOKENIZER_SENTENCES)]
    corpus = [r.prompt + r.completion for r in train] + [t for t in extra if t not in held]
    tokenizer = train_tokenizer(corpus, STUDENT_VOCAB)
    config = llama_config(len(tokenizer), hidden_size=128, intermediate_size=384, num_layers=2)
    return {
        "teacher": teacher_dir,
        "student": save_random_llama(work / "student-init", config, tokenizer, seed=0),
        "train": write_jsonl(work / "train.jsonl", train),
        "heldout": heldout,
        "heldout_file": write_jsonl(work / "heldout.jsonl", heldout),
        "student_vocab": len(tokenizer),
        "teacher_vocab": int(teacher.model.config.vocab_size),
    }


def train_arm(data: dict[str, Any], name: str, work: Path, steps: int, progress: bool) -> Path:
    """Train one arm from the shared initial student; its run directory."""
    from kd_train.trainer import parse_config, train

    cross = "cross_tokenizer" in ARMS[name]
    config = {
        "student": {"path": str(data["student"])},
        "teacher": {"kind": "hf", "path": str(data["teacher"])} if cross else {"kind": "none"},
        "data": {"train": str(data["train"]), "eval_fraction": 0.0, "max_length": 96},
        "loss": ARMS[name],
        "optim": {"lr": 3e-3, "warmup_steps": 10},
        "train": {"max_steps": steps, "batch_size": 8, "threads": torch.get_num_threads()},
        "output_dir": str(work / f"arm-{name}"),
    }
    return train(parse_config(config), progress=progress).run_dir


def evaluate(student_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The held-out text-level figures of one student against the teacher."""
    from kd_eval.fidelity.run import evaluate_fidelity
    from kd_eval.loading.models import LoadedModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(path: Path) -> LoadedModel:
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        return LoadedModel(path, model, AutoTokenizer.from_pretrained(path))

    result = evaluate_fidelity(load(data["teacher"]), load(student_dir), data["heldout"])
    figures: dict[str, Any] = {k: v.to_dict() for k, v in result.aggregate.items()}
    figures["per_example"] = {
        "student_bits_per_byte": [r["student_bits_per_byte"] for r in result.examples],
        "n_bytes": [r["n_bytes"] for r in result.examples],
    }
    return figures


def paired_difference(arm: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Byte-weighted mean of the per-example bits-per-byte differences, paired bootstrap CI."""
    from kd_eval.stats.bootstrap import bootstrap_mean

    ours, theirs = arm["per_example"], base["per_example"]
    diffs = [
        a - b
        for a, b in zip(ours["student_bits_per_byte"], theirs["student_bits_per_byte"], strict=True)
    ]
    return bootstrap_mean(diffs, ours["n_bytes"]).to_dict()


@torch.no_grad()
def compare_with_trl(student_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Our ULD against TRL GOLD's ``ULDLoss`` on the same logits; the largest difference."""
    from kd_eval.fidelity.run import encode_example
    from kd_train.losses.cross_tokenizer import uld
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gold.gold_trainer import ULDLoss

    config = SimpleNamespace(
        uld_crossentropy_weight=0.0,
        uld_distillation_weight=1.0,
        uld_student_temperature=1.0,
        uld_teacher_temperature=1.0,
        uld_skip_student_eos=False,
        uld_skip_teacher_eos=False,
        use_extended_uld=False,
        uld_token_merge_strategy="observed",
    )
    trl_uld = ULDLoss(config)
    models = {}
    for side, path in (("teacher", data["teacher"]), ("student", student_dir)):
        models[side] = (
            AutoModelForCausalLM.from_pretrained(path).eval(),
            AutoTokenizer.from_pretrained(path),
        )
    diffs, values = [], []
    for record in data["heldout"][:10]:
        rows = {}
        for side, (model, tok) in models.items():
            ids, n_prompt = encode_example(tok, record)
            logits = model(input_ids=torch.tensor([ids])).logits.float()
            labels = torch.full((1, len(ids)), -100)
            labels[0, n_prompt:] = torch.tensor(ids[n_prompt:])
            rows[side] = (logits, labels, torch.tensor([ids]))
        (s_logits, s_labels, s_ids), (t_logits, t_labels, t_ids) = rows["student"], rows["teacher"]
        # TRL's plain ULD reads the logits at the label positions, paired by index.
        theirs = float(trl_uld(s_logits, t_logits, s_labels, t_labels, s_ids, t_ids))
        n = min(int((s_labels != -100).sum()), int((t_labels != -100).sum()))
        start_s = int((s_labels[0] != -100).nonzero()[0])
        start_t = int((t_labels[0] != -100).nonzero()[0])
        s = torch.log_softmax(s_logits[0, start_s : start_s + n], -1)
        t = torch.log_softmax(t_logits[0, start_t : start_t + n], -1)
        ours = float(uld(s, t).mean())
        diffs.append(abs(ours - theirs))
        values.append(ours)
    return {
        "records": len(diffs),
        "mean_uld": sum(values) / len(values),
        "max_abs_difference": max(diffs),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Held-out bits per byte and text-level top-1 agreement per arm, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    floor = result["teacher_bits_per_byte"]["value"]
    for ax, key, label in (
        (axes[0], "student_bits_per_byte", f"held-out bits per byte (teacher: {floor:.3f})"),
        (axes[1], "text_top1_agreement", "text-level top-1 agreement with the teacher"),
    ):
        interval_bars(ax, arms, key)
        ax.set(title=label)
    fig.suptitle(
        f"cross-tokenizer KD, SmolLM2-135M (V={result['teacher_vocab']}) into a student with "
        f"its own BPE (V={result['student_vocab']}): {result['steps']} steps, 95% intervals"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(steps: int, progress: bool) -> dict[str, Any]:
    """Train and measure the three arms; return the result."""
    with tempfile.TemporaryDirectory(prefix="kd-cross-tokenizer-") as tmp:
        work = Path(tmp)
        data = setup(work)
        result: dict[str, Any] = {
            "steps": steps,
            "student_vocab": data["student_vocab"],
            "teacher_vocab": data["teacher_vocab"],
            "heldout_records": len(data["heldout"]),
            "arms": {},
        }
        for name in ARMS:
            started = time.perf_counter()
            run_dir = train_arm(data, name, work, steps, progress)
            figures = evaluate(run_dir / "student", data)
            figures["train_seconds"] = round(time.perf_counter() - started, 1)
            result["arms"][name] = figures
            print(f"{name}: {figures['train_seconds']:.0f} s", file=sys.stderr)
        result["teacher_bits_per_byte"] = result["arms"]["ce"]["teacher_bits_per_byte"]
        base = result["arms"]["ce"]
        result["vs_ce"] = {
            name: paired_difference(figures, base)
            for name, figures in result["arms"].items()
            if name != "ce"
        }
        result["trl_uld"] = compare_with_trl(work / "arm-uld" / "student", data)
        for figures in result["arms"].values():
            figures.pop("per_example")
        return result


def print_table(result: dict[str, Any]) -> None:
    """One row per arm: bits per byte and text-level agreement with their 95% intervals."""
    keys = ["student_bits_per_byte", "text_top1_agreement"]
    print(
        f"\n{result['steps']} steps, {result['heldout_records']} held-out records; teacher "
        f"bits/byte {result['teacher_bits_per_byte']['value']:.3f}"
    )
    print(f"{'arm':<8}" + "".join(f"{k:>30}" for k in keys) + f"{'bpb vs ce':>30}")
    for name, figures in result["arms"].items():
        cells = [
            f"{figures[k]['value']:.3f} [{figures[k]['low']:.3f}, {figures[k]['high']:.3f}]"
            for k in keys
        ]
        diff = result["vs_ce"].get(name)
        cells.append(
            ""
            if diff is None
            else f"{diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"
        )
        print(f"{name:<8}" + "".join(f"{c:>30}" for c in cells))
    trl = result["trl_uld"]
    print(
        f"\nULD vs TRL GOLD ULDLoss on {trl['records']} held-out records: mean ULD "
        f"{trl['mean_uld']:.4f}, largest |difference| {trl['max_abs_difference']:.2e}"
    )


def main() -> int:
    """Run, print, and write the result (and plot) where asked."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out, png = output_dirs(args.record)
    result = run(args.steps, not args.no_progress)
    result["date"] = time.strftime("%Y-%m-%d")
    print_table(result)
    plot(result, png / "cross_tokenizer.png")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_tokenizer.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
