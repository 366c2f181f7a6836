"""Evidence for quantization-aware distillation and LoRA students (toy and SmolLM2 pipelines).

Arms, each a ``kd-train distill`` run in its own process (so that its peak RSS is its own),
all from the same teacher, data, loss (forward KL), seed and optimiser:

``fp32``       the student distilled in float for ``steps`` steps;
``qat-int8``   the same run with ``qat: {scheme: int8, start_step: steps // 2}``;
``qat-int4``   the same with ``qat: {scheme: int4, group_size: 32, ...}``;
``full``       the fp32 student distilled ``steps // 2`` more steps, every weight trained;
``lora``       the same continuation with ``student.lora`` (rank 8 on every linear layer).

Post-training quantization (``ptq-int8``, ``ptq-int4``): the fp32 student with the scheme's
fake quantization applied without training (``quantization.json`` written next to it, as
a QAT run writes it; :func:`kd_train.trainer.qat.prepare_qat`), i.e. the same integer
weights and scales a QAT student's export would get.

Measured on held-out records disjoint from training by content
(:func:`kd_train.pipelines.common.split_held_out`), with bootstrap 95% intervals over
examples (:func:`kd_eval.fidelity.run.evaluate_fidelity`, which loads a QAT/PTQ student
fake-quantized): ``forward_kl`` (teacher to student) and ``top1_agreement``; for the
quantized students ``kl_vs_fp32``, the mean per-example KL difference to the fp32 student on
the same records with a paired bootstrap interval (what PTQ costs, and what QAT costs), and
``recovered``: the share of the fidelity PTQ loses against fp32 that QAT wins back,
``(KL_ptq - KL_qat) / (KL_ptq - KL_fp32)`` (the issue asks for at least 0.5; ``None`` when
PTQ loses nothing).
Each fp32/PTQ/QAT student is exported to ONNX (``kd_convert.pipeline.export_model``):
``onnx_bytes`` (the model file on disk: on a toy student mostly graph metadata),
``weight_bytes`` (its initializers: the weights and scales) and ``latency_ms`` (median of
30 onnxruntime runs, one sequence of 64 tokens, one thread). For ``full`` and ``lora``:
``peak_rss_mb`` (the run's peak resident memory, from its metrics), ``trainable``
parameters and the bytes of their gradients and AdamW state (``3 × 4`` bytes each), which is
what LoRA saves.

``--student smollm2``: quantization-aware distillation of a trained model into its own
quantized copy (what NVIDIA ModelOpt calls QAD): the teacher is SmolLM2-135M-Instruct, the
student starts as the very same weights, the data are the SmolLM2 pipeline's
(:func:`evidence_on_policy.smollm2_setup`). The ``fp32`` arm is that starting student, not
trained (distilling a copy of the teacher towards the teacher changes nothing: the KL is
at its minimum, 0); PTQ quantizes it, QAT distils it with the scheme on from step 0. This is
where rounding costs something: a 135M model trained on trillions of tokens, not a toy.

Usage: ``python packages/kd-eval/benchmarks/evidence_qat.py [--student toy|wide|smollm2]
[--steps N] [--no-lora] [--no-onnx] [--schemes int8 int4] [--record]``. Figures print as a
table; ``--record`` writes the student's entry of ``qa/perf/results/qat.json`` and
``docs/_static/perf/qat.png`` (``qat_wide.png``, ``qat_smollm2.png``), which the docs' QAT
and LoRA guide shows; without it they go to ``qa/reports/perf/`` (or ``$KD_PERF_RESULTS``
and ``$KD_PERF_CHARTS``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence_on_policy import interval_bars, output_dirs, smollm2_setup, toy_setup

SCHEMES = {"int8": {"scheme": "int8"}, "int4": {"scheme": "int4", "group_size": 32}}
LORA = {
    "rank": 8,
    "alpha": 16.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
LATENCY_LENGTH = 64
#: The optimiser and batch of each pipeline's runs (the smollm2 student is a trained model:
#: a fine-tuning learning rate, two threads).
TOY_TRAINING = {"lr": 1e-2, "warmup_steps": 10, "batch_size": 16, "max_length": 64, "threads": 1}
SMOLLM2_TRAINING = {"lr": 5e-5, "warmup_steps": 5, "batch_size": 8, "max_length": 96, "threads": 2}


def setup(work: Path, progress: bool, student: str = "toy") -> dict[str, Any]:
    """The toy pipeline's data, its CE-trained tiny Llama teacher and the untrained student.

    ``student``: ``toy`` (the pipeline's student, hidden 32, 2 layers) or ``wide`` (the
    teacher's own architecture and initial weights, hidden 64, 3 layers: a student that can
    get close to the teacher, so that rounding, not capacity, is what it loses).
    ``smollm2``: SmolLM2-135M-Instruct as the teacher and as the student's starting weights.
    """
    from kd_train.pipelines.toydata import write_jsonl

    if student == "smollm2":
        smol = smollm2_setup(work, progress)
        return {
            "teacher": smol["teacher"],
            "student": smol["teacher"],
            "train": smol["train"],
            "heldout": smol["heldout"],
            "heldout_file": write_jsonl(work / "heldout.jsonl", smol["heldout"]),
            "fp32_trained": False,
            **SMOLLM2_TRAINING,
        }
    toy = toy_setup(work, progress)
    return {
        "teacher": toy["teacher"],
        "student": toy["student"] if student == "toy" else toy["teacher_init"],
        "train": toy["train"],
        "heldout": toy["heldout"],
        "heldout_file": write_jsonl(work / "heldout.jsonl", toy["heldout"]),
        "fp32_trained": True,
        **TOY_TRAINING,
    }


def distill(
    work: Path,
    name: str,
    student: Path,
    data: dict[str, Any],
    steps: int,
    *,
    lora: dict[str, Any] | None = None,
    qat: dict[str, Any] | None = None,
) -> Path:
    """``kd-train distill`` of one arm in its own process; return its run directory."""
    import yaml

    config = {
        "student": {"path": str(student), **({"lora": lora} if lora else {})},
        "teacher": {"kind": "hf", "path": str(data["teacher"])},
        "data": {
            "train": str(data["train"]),
            "eval_fraction": 0.0,
            "max_length": data["max_length"],
        },
        "loss": {"weights": {"kd": 1.0}},
        "optim": {"lr": data["lr"], "warmup_steps": data["warmup_steps"]},
        "train": {
            "max_steps": steps,
            "batch_size": data["batch_size"],
            "threads": data["threads"],
        },
        "output_dir": str(work / name),
        **({"qat": qat} if qat else {}),
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "kd-train"),
            "distill",
            "--config",
            str(path),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return work / name


def post_training_quantized(fp32: Path, out: Path, scheme: dict[str, Any]) -> Path:
    """A copy of the fp32 student with the scheme's fake quantization and no training."""
    from kd_train.trainer.qat import post_training_quantize
    from kd_train.trainer.train_config import QATConfig

    return post_training_quantize(fp32, out, QATConfig(**scheme))


def fidelity(student: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Held-out forward KL and top-1 agreement (with intervals) and their per-example values."""
    from kd_eval.fidelity.run import evaluate_fidelity
    from kd_eval.loading.models import load_model
    from kd_eval.quantization.compare import fidelity_figures

    teacher = load_model(data["teacher"])
    return fidelity_figures(evaluate_fidelity(teacher, load_model(student), data["heldout"]))


def paired_kl(arm: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Mean per-example ``KL_arm - KL_base`` on the same records, with a paired bootstrap CI."""
    from kd_eval.quantization.compare import paired_difference

    return paired_difference(arm["per_example_kl"], base["per_example_kl"]).to_dict()


def onnx_figures(student: Path, out: Path) -> dict[str, Any]:
    """Export ``student`` to ONNX; its size on disk, parity and onnxruntime latency."""
    from kd_convert.pipeline import export_model
    from kd_convert.spec import ExportSpec
    from kd_eval.quantization.footprint import onnx_latency, onnx_size

    result = export_model(student, out, ExportSpec("onnx", (LATENCY_LENGTH,)))
    size = onnx_size(result.artifact)
    return {
        "onnx_bytes": size["file_bytes"],
        "weight_bytes": size["weight_bytes"],
        "latency_ms": onnx_latency(result.artifact, LATENCY_LENGTH, 30)["latency_ms"],
        "parity": result.parity.status,
    }


def training_memory(run: Path) -> dict[str, Any]:
    """Peak RSS of the run, its trainable parameters and their gradient + AdamW bytes."""
    from kd_train.trainer.metrics import read_metrics
    from safetensors import safe_open

    rows = read_metrics(run / "metrics.jsonl")
    checkpoint = sorted((run / "checkpoints").iterdir())[-1]
    with safe_open(str(checkpoint / "optimizer.safetensors"), framework="pt") as handle:
        names = handle.keys()
        shapes = [handle.get_slice(k).get_shape() for k in names if k.endswith(".exp_avg")]
    trainable = sum(int(np.prod(shape)) for shape in shapes)
    return {
        "peak_rss_mb": max(r["peak_memory_mb"] for r in rows),
        "trainable": trainable,
        "grad_and_adam_mb": trainable * 3 * 4 / 2**20,
        "seconds": rows[-1]["elapsed_s"],
    }


def run(
    steps: int,
    progress: bool,
    student: str = "toy",
    lora_arms: bool = True,
    onnx: bool = True,
    schemes: tuple[str, ...] = tuple(SCHEMES),
    quant_arms: bool = True,
) -> dict[str, Any]:
    """Train every arm and measure it; return the result."""
    with tempfile.TemporaryDirectory(prefix="kd-qat-") as tmp:
        work = Path(tmp)
        data = setup(work, progress, student)
        result: dict[str, Any] = {
            "student": student,
            "steps": steps,
            "heldout_records": len(data["heldout"]),
            "training": {k: data[k] for k in TOY_TRAINING},
            "fp32_trained": data["fp32_trained"],
        }

        def measure(model: Path, name: str) -> dict[str, Any]:
            figures = fidelity(model, data)
            return {**figures, **onnx_figures(model, work / f"x-{name}")} if onnx else figures

        if data["fp32_trained"]:
            fp32 = distill(work, "fp32", data["student"], data, steps) / "student"
        else:
            fp32 = Path(data["student"])
        if not quant_arms:
            result["lora"] = lora_comparison(work, fp32, data, steps // 2)
            return result
        quant: dict[str, Any] = {"fp32": measure(fp32, "fp32")}
        for scheme in schemes:
            section = SCHEMES[scheme]
            qat = (
                distill(
                    work,
                    f"qat-{scheme}",
                    data["student"],
                    data,
                    steps,
                    qat={**section, "start_step": steps // 2 if data["fp32_trained"] else 0},
                )
                / "student"
            )
            ptq = post_training_quantized(fp32, work / f"ptq-{scheme}", section)
            for name, model in ((f"ptq-{scheme}", ptq), (f"qat-{scheme}", qat)):
                quant[name] = measure(model, name)
            for name in (f"ptq-{scheme}", f"qat-{scheme}"):
                quant[name]["kl_vs_fp32"] = paired_kl(quant[name], quant["fp32"])
            quant[f"qat-{scheme}"]["recovered"] = {
                metric: recovered(quant, scheme, metric)
                for metric in ("forward_kl", "top1_agreement")
            }
        result["quantization"] = quant
        if not lora_arms:
            return result
        result["lora"] = lora_comparison(work, fp32, data, steps // 2)
        return result


def lora_comparison(work: Path, fp32: Path, data: dict[str, Any], steps: int) -> dict[str, Any]:
    """Full fine-tuning against LoRA, ``steps`` more steps from the same starting student.

    The toy students start from the fp32 student. The SmolLM2 student *is* its teacher (KL 0,
    nothing to learn), so both start from its int4-rounded copy (:func:`rounded_copy`): a
    damaged model that distillation repairs, with the full model's optimiser state to hold.
    """
    start, origin = fp32, "the fp32 student"
    arms: dict[str, Any] = {}
    if not data["fp32_trained"]:
        start = rounded_copy(fp32, work / "rounded-int4", SCHEMES["int4"])
        origin = "the fp32 student with its weights rounded to int4 (group 32), stored as float"
        arms["start"] = fidelity(start, data)
    for name, adapters in (("full", None), ("lora", LORA)):
        run_dir = distill(work, name, start, data, steps, lora=adapters)
        arms[name] = {**fidelity(run_dir / "student", data), **training_memory(run_dir)}
    return {"steps": steps, "arms": arms, "config": LORA, "start": origin}


def rounded_copy(student: Path, out: Path, scheme: dict[str, Any]) -> Path:
    """A float copy of ``student`` whose quantized layers hold their rounded weights.

    Each weight becomes ``q · scale`` (:func:`kd_train.trainer.qat.weight_qparams`): the
    numbers a post-training-quantized export computes with, as a plain float model that any
    run (LoRA included) can train.
    """
    from kd_train.trainer.qat import prepare_qat, quantizable_layers, weight_qparams
    from kd_train.trainer.train_config import QATConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(student)
    fake = AutoModelForCausalLM.from_pretrained(student)
    prepare_qat(fake, QATConfig(**scheme))
    layers = dict(fake.named_modules())
    with torch.no_grad():
        for name, layer in quantizable_layers(plain).items():
            q, scale = weight_qparams(layers[name])
            group = layer.weight.shape[1] // scale.shape[1]
            layer.weight.copy_(q.to(torch.float32) * scale.repeat_interleave(group, dim=1))
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(student).save_pretrained(out)
    return out


def recovered(quant: dict[str, Any], scheme: str, metric: str) -> float | None:
    """Share of the fidelity PTQ loses that QAT recovers.

    ``None`` unless PTQ's loss is resolved: its paired KL difference to fp32 must have an
    interval above 0 (a ratio over a loss the held-out set cannot tell from 0 means nothing).
    """
    from kd_eval.quantization.compare import recovered_share

    fp32, ptq, qat = quant["fp32"], quant[f"ptq-{scheme}"], quant[f"qat-{scheme}"]
    return recovered_share(fp32, ptq, qat, metric)[0]


def print_table(result: dict[str, Any]) -> None:
    """The quantization table and the LoRA table."""
    print(f"\n{result['student']} student: {result['steps']} steps, ", end="")
    print(f"{result['heldout_records']} held-out records")
    if "quantization" in result:
        print_quantization(result)
    if "lora" not in result:
        return
    lora = result["lora"]
    print(f"\nLoRA vs full fine-tuning: {lora['steps']} more steps from {lora['start']}")
    print(f"{'arm':<6}{'forward_kl':>26}{'top1':>8}{'trainable':>11}{'grad+Adam MiB':>15}", end="")
    print(f"{'peak RSS MiB':>14}")
    for name, f in lora["arms"].items():
        kl = f["forward_kl"]
        print(
            f"{name:<6}{kl['value']:>10.3f} [{kl['low']:.3f}, {kl['high']:.3f}]"
            f"{f['top1_agreement']['value']:>8.3f}{f.get('trainable', '-'):>11}"
            f"{f.get('grad_and_adam_mb', float('nan')):>15.3f}"
            f"{f.get('peak_rss_mb', float('nan')):>14.0f}"
        )


def print_quantization(result: dict[str, Any]) -> None:
    """The fp32 / PTQ / QAT table."""
    head = ("forward_kl", "top1_agreement")
    print(f"{'student':<10}" + "".join(f"{h:>26}" for h in head), end="")
    print(f"{'file KiB':>9}{'weights KiB':>12}{'ms':>7}{'recovered':>10}{'KL - fp32 (paired)':>28}")
    for name, f in result["quantization"].items():
        cells = [
            f"{f[k]['value']:.3f} [{f[k]['low']:.3f}, {f[k]['high']:.3f}]"
            for k in ("forward_kl", "top1_agreement")
        ]
        rec = f.get("recovered", {}).get("forward_kl")
        rec_text = "" if rec is None else f"{rec:.2f}"
        print(f"{name:<10}{cells[0]:>26}{cells[1]:>26}", end="")
        diff = f.get("kl_vs_fp32")
        diff_text = (
            ""
            if diff is None
            else (f"{diff['value']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]")
        )
        if "onnx_bytes" in f:
            size, weights, ms = f["onnx_bytes"] / 1024, f["weight_bytes"] / 1024, f["latency_ms"]
            print(f"{size:>9.0f}{weights:>12.0f}{ms:>7.2f}", end="")
        else:
            print(f"{'-':>9}{'-':>12}{'-':>7}", end="")
        print(f"{rec_text:>10}{diff_text:>28}")


def plot(result: dict[str, Any], path: Path) -> None:
    """Held-out KL of fp32 / PTQ / QAT per scheme with intervals; ONNX size and latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quant = result["quantization"]
    names = list(quant)
    onnx = all("weight_bytes" in quant[n] for n in names)
    fig, axes = plt.subplots(1, 3 if onnx else 1, figsize=(15 if onnx else 6, 4.2), squeeze=False)
    axes = axes[0]
    colours = [
        "#4c72b0" if n == "fp32" else "#dd8452" if n.startswith("ptq") else "#55a868" for n in names
    ]
    interval_bars(axes[0], quant, "forward_kl", colours)
    axes[0].set(title="held-out KL(teacher || student), 95% CI", ylabel="nats / token")
    if onnx:
        axes[1].bar(names, [quant[n]["weight_bytes"] / 1024 for n in names], color=colours)
        axes[1].set(title="ONNX weights + scales (initializers)", ylabel="KiB")
        axes[2].bar(names, [quant[n]["latency_ms"] for n in names], color=colours)
        axes[2].set(
            title=f"onnxruntime latency, 1 x {LATENCY_LENGTH} tokens, 1 thread", ylabel="ms"
        )
    fig.suptitle(
        f"{result['student']} student: fp32, post-training quantized and QAT "
        f"({result['steps']} steps)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    """Run, print, and write the result (and the plot) where asked."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--student", choices=("toy", "wide", "smollm2"), default="toy")
    parser.add_argument("--no-lora", action="store_true", help="skip the LoRA arms")
    parser.add_argument(
        "--lora-only",
        action="store_true",
        help="only the LoRA arms; with --record they replace the stored entry's LoRA table",
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX size and latency")
    parser.add_argument("--schemes", nargs="+", choices=tuple(SCHEMES), default=list(SCHEMES))
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, png = output_dirs(args.record)
    result = run(
        args.steps,
        not args.no_progress,
        args.student,
        not args.no_lora,
        onnx=not args.no_onnx,
        schemes=tuple(args.schemes),
        quant_arms=not args.lora_only,
    )
    result["date"] = time.strftime("%Y-%m-%d")
    print_table(result)
    path = out / "qat.json"
    stored = json.loads(path.read_text()) if path.exists() else {}  # other students kept
    if args.lora_only:
        entry = stored.setdefault(args.student, {})
        entry["lora"] = {**result["lora"], "date": result["date"], "run_steps": args.steps}
    else:
        plot(result, png / ("qat.png" if args.student == "toy" else f"qat_{args.student}.png"))
        kept = stored.get(args.student, {}).get("lora")
        stored[args.student] = (
            result if kept is None or "lora" in result else {**result, "lora": kept}
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
