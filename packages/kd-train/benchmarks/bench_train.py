"""Training throughput and peak memory of the kd-train loop against TRL's ``GKDTrainer``.

Both sides train the same tiny GQA Llama student (hidden 64, 2 layers) from the same tiny
Llama teacher (hidden 128, 4 layers, dense logits) on the same tool-call records, with the
same batch (16 records, right-padded to the longest, at most 64 tokens), AdamW, and the
same loss: forward KL(teacher ‖ student) at temperature 1 over the completion tokens
(TRL: ``lmbda=0`` and ``seq_kd=False``, i.e. off-policy distillation on the dataset, and
``beta=0``, its forward-KL end point). Each side runs in its own process with one thread
(``torch.set_num_threads(1)``), so its peak RSS is its own.

Figures per side: ``tokens_per_s`` (real, non-pad tokens per second over the steps after
the first ``WARMUP`` ones) and ``peak_growth_mb`` (peak RSS minus the RSS after the
imports, i.e. what training itself costs). Ratios: ``speed_ratio`` = kd / TRL tokens/s
(target >= 1) and ``memory_ratio`` = kd / TRL peak growth (target <= 1).

Usage: ``python bench_train.py [--quick] [--update-baseline]``. Results go to
``qa/perf/results/train.json``; the ratios are compared with ``qa/perf/baselines/train.json``
with ``[perf] tolerance`` of ``qa/gates.toml``; the script exits 1 on a regression.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
NAME = "train"
RESULTS = ROOT / "qa" / "perf" / "results" / f"{NAME}.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / f"{NAME}.json"
GATES = ROOT / "qa" / "gates.toml"
BATCH, MAX_LENGTH, LR, WARMUP = 16, 64, 1e-3, 3


def rss_mb() -> float:
    """Peak RSS of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current RSS of this process, MiB (from /proc; the peak where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def prepare(work: Path) -> dict[str, str]:
    """Write the models and the dataset both sides use; return their paths."""
    from kd_train.pipelines.toydata import corpus_of, tool_call_records, write_jsonl
    from kd_train.testing import DEFAULT_CORPUS, save_tiny_llama

    records = tool_call_records(512, seed=0)
    corpus = [*DEFAULT_CORPUS, *corpus_of(records)]
    student = save_tiny_llama(work / "student", seed=0, hidden_size=64, corpus=corpus)
    teacher = save_tiny_llama(
        work / "teacher", seed=1, hidden_size=128, num_layers=4, corpus=corpus
    )
    data = write_jsonl(work / "train.jsonl", records)
    return {"student": str(student), "teacher": str(teacher), "data": str(data)}


def worker_kd(paths: dict[str, str], steps: int, work: Path) -> dict[str, Any]:
    """Train with ``kd_train.trainer.train``; throughput from its metrics rows."""
    import torch
    from kd_train.trainer import parse_config, train
    from kd_train.trainer.metrics import read_metrics

    torch.set_num_threads(1)
    base = current_rss_mb()
    config = {
        "student": {"path": paths["student"]},
        "teacher": {"kind": "hf", "path": paths["teacher"]},
        "data": {"train": paths["data"], "eval_fraction": 0.0, "max_length": MAX_LENGTH},
        "loss": {"divergence": "forward_kl", "weights": {"kd": 1.0}},
        "optim": {"lr": LR, "warmup_steps": 0, "min_lr_ratio": 1.0},
        "train": {"max_steps": steps, "batch_size": BATCH, "clip_norm": 1.0, "threads": 1},
        "output_dir": str(work / "kd-run"),
    }
    result = train(parse_config(config), progress=False)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    timed = rows[WARMUP:]
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in timed)
    return {
        "tokens_per_s": sum(r["tokens"] for r in timed) / seconds,
        "peak_growth_mb": rss_mb() - base,
        "peak_rss_mb": rss_mb(),
        "final_loss": rows[-1]["loss"],
    }


def worker_trl(paths: dict[str, str], steps: int, work: Path) -> dict[str, Any]:
    """Train with TRL's ``GKDTrainer`` (lmbda=0, seq_kd off, beta=0); same data and batch."""
    import torch
    from datasets import Dataset
    from kd_train.data import TokenizeConfig, collate, encode_record, read_records
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(1)
    base = current_rss_mb()
    tokenizer = AutoTokenizer.from_pretrained(paths["student"])
    records = {r.id: r for r in read_records(paths["data"])}
    tok_cfg = TokenizeConfig(max_length=MAX_LENGTH)
    seen_tokens: list[int] = []

    def collator(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(
            [encode_record(records[r["id"]], tokenizer, tok_cfg) for r in rows],
            int(tokenizer.pad_token_id),
        )
        seen_tokens.append(int(batch.attention_mask.sum()))
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "labels": batch.labels,
        }

    step_seconds: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            step_seconds.append(time.perf_counter() - self.t0)

    args = GKDConfig(
        output_dir=str(work / "trl-run"),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        lmbda=0.0,
        beta=0.0,
        seq_kd=False,
        temperature=1.0,
        max_length=MAX_LENGTH,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = GKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(paths["student"]),
        teacher_model=AutoModelForCausalLM.from_pretrained(paths["teacher"]),
        args=args,
        data_collator=collator,
        train_dataset=Dataset.from_list([{"id": i} for i in records]),
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()
    mean_tokens = sum(seen_tokens) / len(seen_tokens)
    timed = step_seconds[WARMUP:]
    return {
        "tokens_per_s": mean_tokens * len(timed) / sum(timed),
        "peak_growth_mb": rss_mb() - base,
        "peak_rss_mb": rss_mb(),
    }


def measure(side: str, paths: dict[str, str], steps: int, work: Path) -> dict[str, Any]:
    """Run one side in a fresh process (its own peak RSS); return its figures."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", side, json.dumps(paths), str(steps), str(work)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def tolerance() -> float:
    """``[perf.train] tolerance``, else ``[perf] tolerance`` of ``qa/gates.toml``."""
    perf = tomllib.loads(GATES.read_text(encoding="utf-8")).get("perf", {})
    return float(perf.get(NAME, {}).get("tolerance", perf.get("tolerance", 1.25)))


def compare_baseline(mode: str, ratios: dict[str, float], tol: float) -> list[str]:
    """A ratio regresses when it moves past the baseline by more than ``tol``."""
    if not BASELINE.exists():
        print(f"no baseline at {BASELINE.relative_to(ROOT)}; run with --update-baseline")
        return []
    stored = json.loads(BASELINE.read_text()).get(mode, {})
    failures = []
    if "speed_ratio" in stored and ratios["speed_ratio"] < stored["speed_ratio"] / tol:
        failures.append(
            f"speed_ratio {ratios['speed_ratio']:.2f} < baseline "
            f"{stored['speed_ratio']:.2f} / {tol}"
        )
    if "memory_ratio" in stored and ratios["memory_ratio"] > stored["memory_ratio"] * tol:
        failures.append(
            f"memory_ratio {ratios['memory_ratio']:.2f} > baseline "
            f"{stored['memory_ratio']:.2f} x {tol}"
        )
    return failures


def write_json(path: Path, mode: str, payload: dict[str, Any]) -> None:
    """Merge ``payload`` under ``mode`` into ``path``, atomically."""
    from kd_train.atomic import atomic_write_text

    data = json.loads(path.read_text()) if path.exists() else {}
    data[mode] = payload
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    """Run both sides; print the table and the ratios; compare with the baseline."""
    if argv[:1] == ["--worker"]:
        side, paths, steps, work = argv[1], json.loads(argv[2]), int(argv[3]), Path(argv[4])
        fn = worker_kd if side == "kd" else worker_trl
        print(json.dumps(fn(paths, steps, work)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, under a minute")
    parser.add_argument("--update-baseline", action="store_true")
    args, _ = parser.parse_known_args(argv)
    mode, steps = ("quick", 20) if args.quick else ("full", 80)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        paths = prepare(work)
        figures = {side: measure(side, paths, steps, work) for side in ("kd", "trl")}
    print(f"{'trainer':<10}{'tokens/s':>12}{'peak growth MB':>16}{'peak RSS MB':>13}")
    for side, fig in figures.items():
        if "error" in fig:
            print(f"{side:<10}  error: {fig['error']}")
            continue
        print(
            f"{side:<10}{fig['tokens_per_s']:>12.0f}{fig['peak_growth_mb']:>16.0f}"
            f"{fig['peak_rss_mb']:>13.0f}"
        )
    if any("error" in f for f in figures.values()):
        write_json(RESULTS, mode, {"figures": figures})
        print("FAIL: a side did not run", file=sys.stderr)
        return 1
    kd, trl = figures["kd"], figures["trl"]
    ratios = {
        "speed_ratio": kd["tokens_per_s"] / trl["tokens_per_s"],
        "memory_ratio": kd["peak_growth_mb"] / max(trl["peak_growth_mb"], 1e-9),
    }
    print(
        f"kd / TRL GKDTrainer: speed {ratios['speed_ratio']:.2f}x (target >= 1), "
        f"peak memory growth {ratios['memory_ratio']:.2f}x (target <= 1)"
    )
    failures = compare_baseline(mode, ratios, tolerance())
    write_json(RESULTS, mode, {"figures": figures, "ratios": ratios, "steps": steps})
    if args.update_baseline:
        write_json(BASELINE, mode, ratios)
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
