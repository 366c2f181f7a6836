"""On-policy step time and throughput of kd-train against TRL's ``GKDTrainer`` (``lmbda=1``).

Both sides train the same tiny GQA Llama student (hidden 64, 2 layers) from the same tiny
Llama teacher (hidden 128, 4 layers) on the prompts of the same tool-call records
(:func:`bench_train.prepare`), fully on-policy: every step the student samples a
completion of at most ``MAX_NEW_TOKENS`` tokens for each prompt (temperature 0.9, no top-k
or top-p limit, KV cache), the teacher scores it, and the loss is the generalised JSD at
``beta = 0.5`` over the sampled tokens (kd: ``train.on_policy: {lmbda: 1}``,
``loss: {divergence: jsd, beta: 0.5}``; TRL: ``GKDConfig(lmbda=1, beta=0.5, seq_kd=False)``).
Same batch, AdamW, learning rate; one thread each, each run in its own process; runs
alternate kd, TRL, kd, TRL per batch size so both sides of a ratio see the same load.

Figures per side: ``step_s`` (median step time, the first ``WARMUP`` steps not timed),
``rows_per_s`` (batch / ``step_s``), ``tokens_per_s`` (mean non-pad tokens of the trained
batch / ``step_s``), ``gen_len_mean`` (mean sampled completion length) and the time split
``generate_s`` / ``teacher_s`` / ``train_s`` (medians). kd reports its split in
``metrics.jsonl``; TRL exposes none, so its ``generate_on_policy_outputs`` (the sampling
call) is timed from outside and its teacher forward is timed by a hook on the teacher.
The ratio is ``speed_ratio = kd rows/s / TRL rows/s`` (target >= 1): rows per second is
the fair measure when the two samplers draw completions of different lengths.

Usage: ``python bench_on_policy.py [--quick] [--update-baseline]``; results go to
``$KD_PERF_RESULTS/on_policy.json`` (default ``qa/reports/perf``) and are compared with
``qa/perf/baselines/on_policy.json`` at ``[perf] tolerance``; a ratio below the target or
worse than the baseline beyond the tolerance exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_train  # the sibling benchmark: models, data and RSS helpers

ROOT = Path(__file__).resolve().parents[3]
NAME = "on_policy"
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / f"{NAME}.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / f"{NAME}.json"
GATES = ROOT / "qa" / "gates.toml"
MAX_LENGTH, MAX_NEW_TOKENS, TEMPERATURE, BETA, LR, WARMUP = 64, 16, 0.9, 0.5, 1e-3, 2
BATCH_SIZES, QUICK_BATCH_SIZES = (8, 16), (8,)


def split_medians(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median of each time-split key over ``rows``.

    >>> split_medians([{"generate_s": 1.0, "teacher_s": 0.5, "train_s": 2.0}] * 3)
    {'generate_s': 1.0, 'teacher_s': 0.5, 'train_s': 2.0}
    """
    return {
        k: statistics.median(r[k] for r in rows) for k in ("generate_s", "teacher_s", "train_s")
    }


def worker_kd(paths: dict[str, str], batch: int, steps: int, work: Path) -> dict[str, Any]:
    """Train on-policy with ``kd_train.trainer.train``; figures from its metrics rows."""
    import torch
    from kd_train.trainer import parse_config, train
    from kd_train.trainer.metrics import read_metrics

    torch.set_num_threads(1)
    config = {
        "student": {"path": paths["student"]},
        "teacher": {"kind": "hf", "path": paths["teacher"]},
        "data": {"train": paths["data"], "eval_fraction": 0.0, "max_length": MAX_LENGTH},
        "loss": {"divergence": "jsd", "beta": BETA, "weights": {"kd": 1.0}},
        "optim": {"lr": LR, "warmup_steps": 0, "min_lr_ratio": 1.0},
        "train": {
            "max_steps": steps,
            "batch_size": batch,
            "clip_norm": 1.0,
            "threads": 1,
            "on_policy": {
                "lmbda": 1.0,
                "temperature": TEMPERATURE,
                "max_new_tokens": MAX_NEW_TOKENS,
                "log_samples": 0,
            },
        },
        "output_dir": str(work / f"kd-on-policy-{batch}"),
    }
    result = train(parse_config(config), progress=False)
    timed = read_metrics(result.run_dir / "metrics.jsonl")[WARMUP:]
    step_s = statistics.median(r["tokens"] / r["tokens_per_s"] for r in timed)
    return {
        "step_s": step_s,
        "rows_per_s": batch / step_s,
        "tokens_per_s": statistics.mean(r["tokens"] for r in timed) / step_s,
        "gen_len_mean": statistics.mean(r["gen_len_mean"] for r in timed),
        **split_medians(timed),
        "peak_rss_mb": bench_train.peak_rss_mb(),
    }


def worker_trl(paths: dict[str, str], batch: int, steps: int, work: Path) -> dict[str, Any]:
    """Train with TRL's ``GKDTrainer`` (``lmbda=1``); the same prompts, batch and sampling."""
    import torch
    from datasets import Dataset
    from kd_train.data import IGNORE_INDEX, TokenizeConfig, collate, encode_record, read_records
    from kd_train.trainer.on_policy import prompts
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(paths["student"])
    pad = int(tokenizer.pad_token_id)
    records = {r.id: r for r in read_records(paths["data"])}
    tok_cfg = TokenizeConfig(max_length=MAX_LENGTH)

    def collator(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch_ = collate([encode_record(records[r["id"]], tokenizer, tok_cfg) for r in rows], pad)
        ids, mask, _ = prompts(batch_, pad)  # left-padded, as TRL's chat collator gives them
        return {
            "input_ids": batch_.input_ids,
            "attention_mask": batch_.attention_mask,
            "labels": batch_.labels,
            "prompts": ids,
            "prompt_attention_mask": mask,
        }

    split: dict[str, list[float]] = {"generate_s": [], "teacher_s": [], "train_s": []}
    trained_tokens: list[int] = []
    generated: list[float] = []
    original = GKDTrainer.generate_on_policy_outputs

    def timed_generate(model: Any, inputs: Any, generation_config: Any) -> Any:
        t0 = time.perf_counter()
        ids, mask, labels = original(model, inputs, generation_config)
        split["generate_s"].append(time.perf_counter() - t0)
        trained_tokens.append(int(mask.sum()))
        generated.append(float((labels != IGNORE_INDEX).sum()) / labels.shape[0])
        return ids, mask, labels

    GKDTrainer.generate_on_policy_outputs = staticmethod(timed_generate)
    teacher = AutoModelForCausalLM.from_pretrained(paths["teacher"])
    teacher_time = [0.0]

    def before(*_: Any) -> None:
        teacher_time.append(time.perf_counter())

    def after(*_: Any) -> None:
        teacher_time[0] += time.perf_counter() - teacher_time.pop()

    teacher.register_forward_pre_hook(before)
    teacher.register_forward_hook(after)
    step_seconds: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.t0 = time.perf_counter()
            teacher_time[0] = 0.0

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            seconds = time.perf_counter() - self.t0
            step_seconds.append(seconds)
            split["teacher_s"].append(teacher_time[0])
            split["train_s"].append(seconds - split["generate_s"][-1] - teacher_time[0])

    args = GKDConfig(
        output_dir=str(work / f"trl-on-policy-{batch}"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        lmbda=1.0,
        beta=BETA,
        seq_kd=False,
        temperature=TEMPERATURE,
        max_new_tokens=MAX_NEW_TOKENS,
        max_length=MAX_LENGTH,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=0,
    )
    GKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(paths["student"]),
        teacher_model=teacher,
        args=args,
        data_collator=collator,
        train_dataset=Dataset.from_list([{"id": i} for i in records]),
        processing_class=tokenizer,
        callbacks=[Timer()],
    ).train()
    step_s = statistics.median(step_seconds[WARMUP:])
    return {
        "step_s": step_s,
        "rows_per_s": batch / step_s,
        "tokens_per_s": statistics.mean(trained_tokens[WARMUP:]) / step_s,
        "gen_len_mean": statistics.mean(generated[WARMUP:]),
        **{k: statistics.median(v[WARMUP:]) for k, v in split.items()},
        "peak_rss_mb": bench_train.peak_rss_mb(),
    }


WORKERS = {"kd": worker_kd, "trl": worker_trl}


def measure(side: str, paths: dict[str, str], batch: int, steps: int, work: Path) -> dict[str, Any]:
    """Run one side in a fresh process; return its figures (or its error)."""
    argv = [json.dumps(paths), str(batch), str(steps), str(work)]
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", side, *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **bench_train.WORKER_ENV},
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def tolerance() -> float:
    """``[perf.on_policy] tolerance``, else ``[perf] tolerance`` of ``qa/gates.toml``."""
    perf = tomllib.loads(GATES.read_text(encoding="utf-8")).get("perf", {})
    return float(perf.get(NAME, {}).get("tolerance", perf.get("tolerance", 1.25)))


def main() -> int:
    """Measure both sides at each batch size, print, write, judge."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--update-baseline", action="store_true")
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args()
    if args.worker:
        paths, batch, steps, work = args.rest
        figures = WORKERS[args.worker](json.loads(paths), int(batch), int(steps), Path(work))
        print(json.dumps(figures))
        return 0
    from tqdm import tqdm

    mode, steps = ("quick", 8) if args.quick else ("full", 24)
    batches = QUICK_BATCH_SIZES if args.quick else BATCH_SIZES
    sizes: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kd-bench-on-policy-") as tmp:
        work = Path(tmp)
        paths = bench_train.prepare(work)
        bar = tqdm([(b, s) for b in batches for s in ("kd", "trl")], desc="on-policy", unit="run")
        for batch, side in bar:
            bar.set_postfix_str(f"{side}, batch {batch}")
            sizes.setdefault(str(batch), {})[side] = measure(side, paths, batch, steps, work)
    print(f"\non-policy (lmbda=1, max_new_tokens={MAX_NEW_TOKENS}), {steps} steps, one thread")
    header = f"{'batch':>5} {'side':<4}{'rows/s':>8}{'tok/s':>8}{'step s':>8}"
    print(f"{header}{'gen s':>8}{'teach s':>8}{'train s':>8}{'len':>6}")
    for batch, entry in sizes.items():
        for side in ("kd", "trl"):
            fig = entry[side]
            if "error" in fig:
                print(f"{batch:>5} {side:<4} error: {fig['error']}")
                failures.append(f"batch {batch}: {side} failed: {fig['error']}")
                continue
            print(
                f"{batch:>5} {side:<4}{fig['rows_per_s']:>8.1f}{fig['tokens_per_s']:>8.0f}"
                f"{fig['step_s']:>8.3f}{fig['generate_s']:>8.3f}{fig['teacher_s']:>8.3f}"
                f"{fig['train_s']:>8.3f}{fig['gen_len_mean']:>6.1f}"
            )
        if "error" not in entry["kd"] and "error" not in entry["trl"]:
            ratio = entry["kd"]["rows_per_s"] / entry["trl"]["rows_per_s"]
            entry["speed_ratio"] = ratio
            print(f"{batch:>5} kd / TRL rows/s: {ratio:.2f}x (target >= 1)")
            if ratio < 1.0:
                failures.append(f"batch {batch}: kd is {ratio:.2f}x TRL's rows/s (target >= 1)")
    bench_train.write_json(RESULTS, mode, {"steps": steps, "sizes": sizes})
    stored = json.loads(BASELINE.read_text()).get(mode, {}) if BASELINE.exists() else {}
    ratios = {b: e["speed_ratio"] for b, e in sizes.items() if "speed_ratio" in e}
    if args.update_baseline:
        bench_train.write_json(BASELINE, mode, ratios)
    else:
        for batch, ratio in ratios.items():
            base = stored.get(batch)
            if base is not None and base / ratio > tolerance():
                failures.append(
                    f"batch {batch}: speed ratio {ratio:.2f} worse than baseline {base:.2f} "
                    f"beyond x{tolerance()}"
                )
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
