"""Training throughput and peak memory of the kd-train loop against TRL's ``GKDTrainer``.

Both sides train the same tiny GQA Llama student (hidden 64, 2 layers) from the same tiny
Llama teacher (hidden 128, 4 layers, dense logits) on the same tool-call records, with the
same batch (right-padded to the longest, at most 64 tokens), AdamW, and the same loss:
forward KL(teacher ‖ student) at temperature 1 over the completion tokens (TRL: ``lmbda=0``,
``seq_kd=False``, ``beta=0``: off-policy forward-KL distillation on the dataset). Each run is
its own single-threaded process. Sizes: batch 8, 16, 32, the same steps each (``--quick``:
batch 16, 20 steps). Runs alternate kd8, trl8, kd16, trl16, ... so that both sides of a ratio
see the same machine load.

Figures per side and size: ``tokens_per_s`` (mean non-pad tokens per step / median step
time, steps after the first ``WARMUP``); ``peak_rss_mb`` (``VmHWM``); ``base_rss_mb`` (RSS
once imports are done); ``peak_growth_mb`` = peak - base, what training costs. Both sides
import ``SHARED_IMPORTS`` (which kd_train would import lazily inside ``train()``) before
``base``; packages first imported later are printed, as they count as growth. Ratios kd /
TRL: ``speed_ratio`` (tokens/s, target >= 1), ``memory_ratio`` (growth) and ``rss_ratio``
(peak RSS), targets <= 1.

Usage: ``python bench_train.py [--quick] [--update-baseline]``. ``qa/perf/results/train.json``
holds per mode ``steps``, ``batch_sizes``, ``sizes`` (``{batch: {"kd", "trl", "ratios"}}``)
and batch 16's ``figures`` and ``ratios``. Every size's ratios are compared with
``qa/perf/baselines/train.json`` (``{mode: {"sizes": {batch: ratios}, **batch-16 ratios}}``;
a file with only the batch-16 ratios is read too) with ``[perf] tolerance`` of
``qa/gates.toml``; the script exits 1 on a regression, and when at any size kd-train is
slower than TRL or grows more memory (the targets ``speed_ratio >= 1``,
``memory_ratio <= 1``). ``--update-baseline`` stores the ratios; only the targets can fail it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import resource
import statistics
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
BATCH_SIZES, QUICK_BATCH_SIZES, REFERENCE_BATCH = (8, 16, 32), (16,), 16
MAX_LENGTH, LR, WARMUP = 64, 1e-3, 3
#: Imported by both workers before ``base``: kd_train imports them lazily inside ``train()``
#: (~160 MB: modeling_llama pulls in accelerate, sympy, ...), TRL at import time.
SHARED_IMPORTS = ("transformers", "transformers.models.llama.modeling_llama")
#: Ratio name -> +1 when higher is better, -1 when lower is better.
RATIO_SENSE = {"speed_ratio": 1, "memory_ratio": -1, "rss_ratio": -1}
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}


def peak_rss_mb() -> float:
    """RSS high-water mark of this process, MiB (``VmHWM``).

    Not ``ru_maxrss``: Linux carries it over ``fork`` + ``exec``, so a worker would report
    the parent's peak (~440 MB here) whenever its own is lower.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current RSS of this process, MiB (from /proc; the peak where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def import_shared() -> set[str]:
    """Import ``SHARED_IMPORTS``; return the names of the packages loaded so far."""
    for module in SHARED_IMPORTS:
        importlib.import_module(module)
    return {name.split(".")[0] for name in sys.modules}


def late_imports(loaded: set[str]) -> list[str]:
    """Top-level packages first imported after ``loaded`` was taken (their cost is growth)."""
    return sorted({name.split(".")[0] for name in sys.modules} - loaded)


def throughput(tokens: list[int], step_seconds: list[float]) -> float:
    """Tokens per second: mean tokens per step / median step time (load spikes drop out).

    >>> throughput([100, 300], [0.1, 0.1, 5.0])
    2000.0
    """
    return statistics.mean(tokens) / statistics.median(step_seconds)


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


def worker_kd(paths: dict[str, str], batch: int, steps: int, work: Path) -> dict[str, Any]:
    """Train with ``kd_train.trainer.train``; throughput from its metrics rows."""
    import torch
    from kd_train.trainer import parse_config, train
    from kd_train.trainer.metrics import read_metrics

    torch.set_num_threads(1)
    loaded, base = import_shared(), current_rss_mb()
    config = {
        "student": {"path": paths["student"]},
        "teacher": {"kind": "hf", "path": paths["teacher"]},
        "data": {"train": paths["data"], "eval_fraction": 0.0, "max_length": MAX_LENGTH},
        "loss": {"divergence": "forward_kl", "weights": {"kd": 1.0}},
        "optim": {"lr": LR, "warmup_steps": 0, "min_lr_ratio": 1.0},
        "train": {"max_steps": steps, "batch_size": batch, "clip_norm": 1.0, "threads": 1},
        "output_dir": str(work / f"kd-run-{batch}"),
    }
    result = train(parse_config(config), progress=False)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    timed = rows[WARMUP:]
    return {
        "tokens_per_s": throughput(
            [r["tokens"] for r in timed], [r["tokens"] / r["tokens_per_s"] for r in timed]
        ),
        "peak_growth_mb": peak_rss_mb() - base,
        "peak_rss_mb": peak_rss_mb(),
        "base_rss_mb": base,
        "final_loss": rows[-1]["loss"],
        "late_imports": late_imports(loaded),
    }


def worker_trl(paths: dict[str, str], batch: int, steps: int, work: Path) -> dict[str, Any]:
    """Train with TRL's ``GKDTrainer`` (lmbda=0, seq_kd off, beta=0); same data and batch."""
    import torch
    from datasets import Dataset
    from kd_train.data import TokenizeConfig, collate, encode_record, read_records
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(1)
    loaded, base = import_shared(), current_rss_mb()
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
        output_dir=str(work / f"trl-run-{batch}"),
        per_device_train_batch_size=batch,
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
    return {
        "tokens_per_s": throughput(seen_tokens, step_seconds[WARMUP:]),
        "peak_growth_mb": peak_rss_mb() - base,
        "peak_rss_mb": peak_rss_mb(),
        "base_rss_mb": base,
        "late_imports": late_imports(loaded),
    }


def measure(side: str, paths: dict[str, str], batch: int, steps: int, work: Path) -> dict[str, Any]:
    """Run one side in a fresh process (its own peak RSS); return its figures."""
    argv = [json.dumps(paths), str(batch), str(steps), str(work)]
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", side, *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **WORKER_ENV},
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def ratios_of(kd: dict[str, float], trl: dict[str, float]) -> dict[str, float]:
    """The kd / TRL ratios: ``speed_ratio`` (tokens/s), ``memory_ratio``, ``rss_ratio``.

    >>> ratios_of({"tokens_per_s": 30, "peak_growth_mb": 50, "peak_rss_mb": 500},
    ...           {"tokens_per_s": 10, "peak_growth_mb": 100, "peak_rss_mb": 1000})
    {'speed_ratio': 3.0, 'memory_ratio': 0.5, 'rss_ratio': 0.5}
    """
    return {
        "speed_ratio": kd["tokens_per_s"] / trl["tokens_per_s"],
        "memory_ratio": kd["peak_growth_mb"] / max(trl["peak_growth_mb"], 1e-9),
        "rss_ratio": kd["peak_rss_mb"] / trl["peak_rss_mb"],
    }


def stored_ratios(stored: dict[str, Any], batch: int) -> dict[str, float]:
    """The baseline ratios of ``batch`` from one mode's baseline entry.

    Per size under ``"sizes"``; an old baseline holds only the batch-16 ratios, flat.

    >>> stored_ratios({"speed_ratio": 2.0}, 16), stored_ratios({"speed_ratio": 2.0}, 8)
    ({'speed_ratio': 2.0}, {})
    """
    if str(batch) in stored.get("sizes", {}):
        return dict(stored["sizes"][str(batch)])
    if batch != REFERENCE_BATCH:
        return {}
    return {k: v for k, v in stored.items() if k in RATIO_SENSE}


def regressions(
    batch: int, ratios: dict[str, float], base: dict[str, float], tol: float
) -> list[str]:
    """A ratio regresses when it moves past its baseline, the wrong way, by more than ``tol``.

    >>> regressions(16, {"speed_ratio": 1.0, "rss_ratio": 0.5},
    ...             {"speed_ratio": 2.0, "rss_ratio": 0.45}, 1.25)
    ['batch 16: speed_ratio 1.00 worse than baseline 2.00 beyond x1.25']
    """
    failures = []
    for name, sense in RATIO_SENSE.items():
        if name in base and name in ratios and (ratios[name] / base[name]) ** -sense > tol:
            failures.append(
                f"batch {batch}: {name} {ratios[name]:.2f} worse than baseline "
                f"{base[name]:.2f} beyond x{tol}"
            )
    return failures


def tolerance() -> float:
    """``[perf.train] tolerance``, else ``[perf] tolerance`` of ``qa/gates.toml``."""
    perf = tomllib.loads(GATES.read_text(encoding="utf-8")).get("perf", {})
    return float(perf.get(NAME, {}).get("tolerance", perf.get("tolerance", 1.25)))


def write_json(path: Path, mode: str, payload: dict[str, Any]) -> None:
    """Merge ``payload`` under ``mode`` into ``path``, atomically."""
    from kd_train.atomic import atomic_write_text

    data = json.loads(path.read_text()) if path.exists() else {}
    data[mode] = payload
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def print_size(batch: int, entry: dict[str, Any]) -> None:
    """Print one batch size: a row per side, then the ratios."""
    print(f"\nbatch {batch}")
    print(f"{'trainer':<9}{'tokens/s':>10}{'growth MB':>11}{'peak RSS MB':>13}{'base MB':>9}")
    for side in ("kd", "trl"):
        fig = entry[side]
        if "error" in fig:
            print(f"{side:<9}  error: {fig['error']}")
            continue
        print(
            f"{side:<9}{fig['tokens_per_s']:>10.0f}{fig['peak_growth_mb']:>11.0f}"
            f"{fig['peak_rss_mb']:>13.0f}{fig['base_rss_mb']:>9.0f}"
        )
    if "ratios" in entry:
        r = entry["ratios"]
        print(
            f"kd / TRL: speed {r['speed_ratio']:.2f}x (>= 1), growth {r['memory_ratio']:.2f}x"
            f" (<= 1), peak RSS {r['rss_ratio']:.2f}x (<= 1)"
        )


def main(argv: list[str]) -> int:
    """Run both sides at every batch size; print the tables; compare with the baseline."""
    if argv[:1] == ["--worker"]:
        fn = worker_kd if argv[1] == "kd" else worker_trl
        print(json.dumps(fn(json.loads(argv[2]), int(argv[3]), int(argv[4]), Path(argv[5]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, 20 steps, ~1 minute")
    parser.add_argument("--update-baseline", action="store_true")
    args, _ = parser.parse_known_args(argv)
    mode, steps = ("quick", 20) if args.quick else ("full", 80)
    batches = QUICK_BATCH_SIZES if args.quick else BATCH_SIZES
    from tqdm import tqdm

    sizes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        paths = prepare(work)
        bar = tqdm(batches, desc="batch sizes", unit="size")
        for batch in bar:
            entry: dict[str, Any] = {}
            for side in ("kd", "trl"):  # interleaved: both sides of a ratio run back to back
                bar.set_postfix_str(f"{side}, batch {batch}")
                entry[side] = measure(side, paths, batch, steps, work)
            if not any("error" in entry[s] for s in ("kd", "trl")):
                entry["ratios"] = ratios_of(entry["kd"], entry["trl"])
            sizes[str(batch)] = entry
    late = {}
    for batch, entry in sizes.items():
        late.update({f"{s}{batch}": entry[s].pop("late_imports", []) for s in ("kd", "trl")})
        print_size(int(batch), entry)
    if any(late.values()):
        print(f"imported after base (counted as growth): {late}")
    payload: dict[str, Any] = {"steps": steps, "batch_sizes": list(batches), "sizes": sizes}
    reference = sizes[str(REFERENCE_BATCH)]
    payload["figures"] = {s: reference[s] for s in ("kd", "trl")}
    if "ratios" in reference:
        payload["ratios"] = reference["ratios"]
    write_json(RESULTS, mode, payload)
    if any("ratios" not in entry for entry in sizes.values()):
        print("FAIL: a side did not run", file=sys.stderr)
        return 1
    stored = json.loads(BASELINE.read_text()).get(mode, {}) if BASELINE.exists() else {}
    if not stored:
        print(f"no {mode} baseline in {BASELINE.relative_to(ROOT)}; run with --update-baseline")
    failures: list[str] = []
    for batch, entry in sizes.items():
        r = entry["ratios"]
        if r["speed_ratio"] < 1.0 or r["memory_ratio"] > 1.0:  # the targets
            failures.append(
                f"batch {batch}: speed {r['speed_ratio']:.2f}x TRL (target >= 1), memory "
                f"growth {r['memory_ratio']:.2f}x TRL (target <= 1)"
            )
        if not args.update_baseline:  # a new reference is not judged by the one it replaces
            base = stored_ratios(stored, int(batch))
            failures += regressions(int(batch), r, base, tolerance())
    if args.update_baseline:
        ratios = {batch: entry["ratios"] for batch, entry in sizes.items()}
        write_json(BASELINE, mode, {"sizes": ratios, **reference["ratios"]})
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
