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

Usage: ``python bench_train.py [--quick] [--group all|batch|long] [--update-baseline]``.
``train.json`` (in ``OUT``) holds per mode ``steps``, ``batch_sizes``, ``sizes``
(``{batch: {"kd", "trl", "ratios"}}``) and batch 16's ``figures`` and ``ratios``. Every
size's ratios are compared with ``qa/perf/baselines/train.json``
(``{mode: {"sizes": {batch: ratios}, **batch-16 ratios}}``; a file with only the
batch-16 ratios is read too) with ``[perf] tolerance`` of
``qa/gates.toml``; the script exits 1 on a regression, and when at any size kd-train is
slower than TRL or grows more memory (the targets ``speed_ratio >= 1``,
``memory_ratio <= 1``). ``--update-baseline`` stores the ratios; only the targets can fail it.

**Long sequences** (``--group long``; ``--group all``, the default, runs both): one
optimiser step at a time at the SmolLM2 vocabulary (49,152) on a 4-layer hidden-256 student
and a 6-layer hidden-384 teacher, batch 4, sequence length 512, 1,024 and 2,048 (``--quick``:
512), every sequence full (no padding), ``LONG_STEPS`` steps, the first not timed. Arms:
``kd`` (``train()``, the chunked path), ``trl`` (``GKDTrainer``, ``lmbda=0``, ``beta=0``) and
``liger``: TRL's ``use_liger_kernel=True`` fails on CPU (Liger's Triton kernels find no
driver), so this arm is a plain PyTorch loop around Liger's ``LigerFusedLinearJSDLoss``
(``beta=0``: forward KL, ``compiled=False``, chunk 1,024 rows) over the same models. Then the
vocabulary sweep: 16,384 / 32,768 / 49,152 at length 1,024 (full mode only). Memory growth
here is over the RSS just before the first step (models loaded, optimiser built), so it is
what the steps cost. Each worker caps its heap (``RLIMIT_DATA``) below the memory the
machine has free, so an arm that does not fit fails alone. Targets at 2,048 (``LONG_TARGETS``):
kd / TRL growth <= 0.5, kd / Liger growth <= 1, tokens/s >= 1 against both (full mode); a
miss, or a ratio worse than ``baseline["long"][mode]`` beyond the tolerance, exits 1, as
above. Results: ``train.json["long"][mode]`` holds ``sizes`` (``{length: {"kd", "trl",
"liger", "ratios": {"trl", "liger"}}}``), ``vocab_sweep`` and ``targets``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import resource
import shutil
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
#: This run's figures: ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it), else
#: the git-ignored ``qa/reports/perf``; ``qa/perf/results`` changes only with ``--record``.
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / f"{NAME}.json"
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
    batch: int, ratios: dict[str, float], base: dict[str, float], tol: float, what: str = "batch"
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
                f"{what} {batch}: {name} {ratios[name]:.2f} worse than baseline "
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
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def merge_json(path: Path, group: str, mode: str, payload: dict[str, Any]) -> None:
    """Merge ``payload`` under ``group`` then ``mode`` into ``path`` (other modes kept)."""
    data = json.loads(path.read_text()).get(group, {}) if path.exists() else {}
    write_json(path, group, {**data, mode: payload})


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


def run_batch(args: argparse.Namespace, work: Path) -> list[str]:
    """The batch-size group: measure, print, write, judge; return its failures."""
    mode, steps = ("quick", 20) if args.quick else ("full", 80)
    batches = QUICK_BATCH_SIZES if args.quick else BATCH_SIZES
    from tqdm import tqdm

    sizes: dict[str, dict[str, Any]] = {}
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
        return ["a side did not run"]
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
    return failures


# ---- long sequences ----------------------------------------------------------------------

#: Steps per arm and point: the first (allocations, lazy optimiser state) is not timed, the
#: median of the other two is; three steps keep the full run near 20 minutes on 2 cores.
LONG_VOCAB, LONG_BATCH, LONG_STEPS, CHUNK = 49_152, 4, 3, 1024
LONG_LENGTHS, QUICK_LONG_LENGTHS = (512, 1024, 2048), (512,)
VOCAB_SWEEP, VOCAB_SWEEP_LENGTH = (16_384, 32_768, LONG_VOCAB), 1024
LONG_ARMS = ("kd", "trl", "liger")
#: ``{arm kd is compared with: {ratio: (bound, sense)}}`` at the longest length, full mode.
LONG_TARGETS = {
    "trl": {"memory_ratio": (0.5, -1), "speed_ratio": (1.0, 1)},
    "liger": {"memory_ratio": (1.0, -1), "speed_ratio": (1.0, 1)},
}
STUDENT = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4}
TEACHER = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6}


def prepare_long(work: Path, vocab: int, length: int) -> dict[str, str]:
    """Student and teacher at ``vocab``, the tiny tokenizer, records of >= ``length`` tokens.

    The tokenizer has a few hundred entries; the models' vocabulary is ``vocab`` all the
    same (the data's ids are valid, the logits as wide as SmolLM2's). A completion of
    ``length`` words is at least ``length`` tokens, so every example is cut to exactly
    ``length``: the batches have no padding.
    """
    import random

    from kd_train.data import write_records
    from kd_train.data.schema import KDRecord
    from kd_train.models import llama_config, save_random_llama
    from kd_train.testing import SYNTHETIC_WORDS, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer([" ".join(SYNTHETIC_WORDS)] * 4)
    paths = {}
    for seed, (name, dims) in enumerate((("student", STUDENT), ("teacher", TEACHER))):
        config = llama_config(
            vocab,
            hidden_size=dims["hidden_size"],
            intermediate_size=dims["intermediate_size"],
            num_layers=dims["num_hidden_layers"],
            max_position_embeddings=max(LONG_LENGTHS),
        )
        out = save_random_llama(work / f"{name}-{vocab}", config, tokenizer, seed=seed)
        paths[name] = str(out)
    rng = random.Random(0)  # noqa: S311 - benchmark data, not secrets
    records = [
        KDRecord(f"r{i}", "Q:", " ".join(rng.choices(SYNTHETIC_WORDS, k=length)))
        for i in range(LONG_BATCH * LONG_STEPS)
    ]
    paths["data"] = str(work / f"long-{length}.jsonl")
    write_records(paths["data"], records)
    return paths


def cap_heap() -> None:
    """Limit this worker's heap to 90% of the memory free now: it fails, not the machine."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                cap = int(line.split()[1]) * 1024 * 9 // 10
                resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.RLIM_INFINITY))


def long_figures(
    tokens: int, step_seconds: list[float], pre_step: float, loaded: set[str]
) -> dict[str, Any]:
    """One arm's figures: tokens/s over the timed steps, peak RSS and growth over pre-step."""
    return {
        "tokens_per_s": throughput([tokens], step_seconds[1:]),
        "peak_rss_mb": peak_rss_mb(),
        "pre_step_rss_mb": pre_step,
        "peak_growth_mb": peak_rss_mb() - pre_step,
        "late_imports": late_imports(loaded),
    }


def long_batches(paths: dict[str, str], length: int) -> list[Any]:
    """The records as kd-train batches it would make: ``LONG_BATCH`` full rows each."""
    from kd_train.data import TokenizeConfig, collate, encode_record, read_records
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths["student"])
    tok_cfg = TokenizeConfig(max_length=length)
    examples = [encode_record(r, tokenizer, tok_cfg) for r in read_records(paths["data"])]
    return [
        collate(examples[i : i + LONG_BATCH], int(tokenizer.pad_token_id))
        for i in range(0, len(examples), LONG_BATCH)
    ]


def long_kd(paths: dict[str, str], length: int, steps: int, work: Path) -> dict[str, Any]:
    """kd-train's ``train()``: chunked loss, hf teacher, forward KL, kd weight 1."""
    import torch
    from kd_train.trainer import loop, parse_config, train
    from kd_train.trainer.metrics import read_metrics

    cap_heap()
    torch.set_num_threads(1)
    loaded, pre_step = import_shared(), []
    make_bar = loop.progress_bar

    def bar_after_setup(*args: Any, **kwargs: Any) -> Any:
        # train() makes its progress bar once, after setup and before step 1: the pre-step RSS
        pre_step.append(current_rss_mb())
        return make_bar(*args, **kwargs)

    loop.progress_bar = bar_after_setup
    config = {
        "student": {"path": paths["student"]},
        "teacher": {"kind": "hf", "path": paths["teacher"]},
        "data": {"train": paths["data"], "eval_fraction": 0.0, "max_length": length},
        "loss": {"divergence": "forward_kl", "weights": {"kd": 1.0}, "chunk_size": CHUNK},
        "optim": {"lr": LR, "warmup_steps": 0, "min_lr_ratio": 1.0},
        "train": {"max_steps": steps, "batch_size": LONG_BATCH, "clip_norm": 1.0, "threads": 1},
        "output_dir": str(work / f"kd-long-{length}-{os.getpid()}"),
    }
    result = train(parse_config(config), progress=False)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    seconds = [r["tokens"] / r["tokens_per_s"] for r in rows]
    # the last row's peak_memory_mb (ru_maxrss; the parent's is lower) is the peak before
    # train() writes its final checkpoint and the student, which the peak RSS includes
    steps_peak = rows[-1]["peak_memory_mb"]
    return {**long_figures(rows[0]["tokens"], seconds, pre_step[0], loaded),
            "steps_peak_rss_mb": steps_peak}  # fmt: skip


def long_trl(paths: dict[str, str], length: int, steps: int, work: Path) -> dict[str, Any]:
    """TRL's ``GKDTrainer`` (``lmbda=0``, ``beta=0``, no Liger) on the same batches."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    cap_heap()
    torch.set_num_threads(1)
    loaded = import_shared()
    batches = long_batches(paths, length)
    step_seconds: list[float] = []
    pre_step: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            pre_step.append(current_rss_mb())

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            step_seconds.append(time.perf_counter() - self.t0)

    def collator(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        b = batches[rows[0]["i"] // LONG_BATCH]
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}

    args = GKDConfig(
        output_dir=str(work / f"trl-long-{length}"), per_device_train_batch_size=LONG_BATCH,
        max_steps=steps, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=1.0, lmbda=0.0, beta=0.0, seq_kd=False, temperature=1.0,
        max_length=length, logging_steps=10_000, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    GKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(paths["student"]),
        teacher_model=AutoModelForCausalLM.from_pretrained(paths["teacher"]),
        args=args,
        data_collator=collator,
        train_dataset=Dataset.from_list([{"i": i} for i in range(LONG_BATCH * len(batches))]),
        processing_class=AutoTokenizer.from_pretrained(paths["student"]),
        callbacks=[Timer()],
    ).train()
    return long_figures(int(batches[0].attention_mask.sum()), step_seconds, pre_step[0], loaded)


def long_liger(paths: dict[str, str], length: int, steps: int, work: Path) -> dict[str, Any]:
    """A plain loop around Liger's fused linear JSD loss (``beta=0``: forward KL).

    ``loss = sum_{t in completion} KL(p_T(.|t) || p_S(.|t)) / n_completion``, computed from
    the two models' last hidden states and ``lm_head`` weights, 1,024 rows at a time.
    """
    import torch
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss
    from transformers import AutoModelForCausalLM

    cap_heap()
    torch.set_num_threads(1)
    loaded = import_shared()
    batches = long_batches(paths, length)
    student = AutoModelForCausalLM.from_pretrained(paths["student"])
    teacher = AutoModelForCausalLM.from_pretrained(paths["teacher"]).eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR)
    jsd = LigerFusedLinearJSDLoss(
        weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0, compiled=False, chunk_size=CHUNK
    )
    pre_step, step_seconds = current_rss_mb(), []
    student.train()
    for step in range(steps):
        b = batches[step % len(batches)]
        t0 = time.perf_counter()
        inputs = {"input_ids": b.input_ids, "attention_mask": b.attention_mask}
        with torch.no_grad():
            t_hidden = teacher.model(**inputs).last_hidden_state[:, :-1]
        s_hidden = student.model(**inputs).last_hidden_state[:, :-1]
        loss = jsd(
            s_hidden.reshape(-1, s_hidden.shape[-1]), student.lm_head.weight,
            t_hidden.reshape(-1, t_hidden.shape[-1]), teacher.lm_head.weight,
            b.labels[:, 1:].reshape(-1),
        )  # fmt: skip
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds.append(time.perf_counter() - t0)
    return long_figures(int(batches[0].attention_mask.sum()), step_seconds, pre_step, loaded)


def long_ratios(entry: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The ratios kd / each other arm that ran: ``{"trl": ratios, "liger": ratios}``."""
    if "error" in entry["kd"]:
        return {}
    return {
        arm: ratios_of(entry["kd"], entry[arm])
        for arm in LONG_ARMS[1:]
        if "error" not in entry[arm]
    }


def target_misses(length: int, ratios: dict[str, dict[str, float]]) -> list[str]:
    """The ``LONG_TARGETS`` that ``ratios`` miss (an arm that did not run misses them all).

    >>> target_misses(2048, {"trl": {"memory_ratio": 0.4, "speed_ratio": 0.9}})
    ['length 2048: kd / trl speed_ratio 0.90 (target >= 1.0)', 'length 2048: no kd / liger ratios']
    """
    misses = []
    for arm, bounds in LONG_TARGETS.items():
        if arm not in ratios:
            misses.append(f"length {length}: no kd / {arm} ratios")
            continue
        for name, (bound, sense) in bounds.items():
            if (ratios[arm][name] - bound) * sense < 0:
                sign = ">=" if sense > 0 else "<="
                misses.append(
                    f"length {length}: kd / {arm} {name} {ratios[arm][name]:.2f} "
                    f"(target {sign} {bound})"
                )
    return misses


def run_long_sweep(
    label: str, points: list[tuple[int, int]], steps: int, work: Path
) -> dict[str, dict[str, Any]]:
    """Run every arm at each ``(vocab, length)``, interleaved; ``{str(x): entry}``.

    ``x`` is the length, or the vocabulary when ``label`` is ``"vocab"``.
    """
    from tqdm import tqdm

    out: dict[str, dict[str, Any]] = {}
    bar = tqdm(points, desc=f"long sequences ({label})", unit="point")
    for vocab, length in bar:
        point = work / f"v{vocab}-t{length}"
        point.mkdir()
        bar.set_postfix_str(f"vocab {vocab}, length {length}: preparing")
        paths = prepare_long(point, vocab, length)
        entry: dict[str, Any] = {}
        for arm in LONG_ARMS:  # interleaved: the arms of one point run back to back
            bar.set_postfix_str(f"vocab {vocab}, length {length}: {arm}")
            entry[arm] = measure(f"long-{arm}", paths, length, steps, point)
        entry["ratios"] = long_ratios(entry)
        out[str(vocab if label == "vocab" else length)] = entry
        shutil.rmtree(point, ignore_errors=True)
    return out


def print_long(title: str, sizes: dict[str, dict[str, Any]]) -> None:
    """A row per point and arm, then kd's ratios to the other two."""
    print(f"\n{title}")
    print(f"{'':>7} {'arm':<7}{'tokens/s':>10}{'growth MB':>11}{'peak RSS MB':>13}{'pre MB':>8}")
    for x, entry in sizes.items():
        for arm in LONG_ARMS:
            fig = entry[arm]
            if "error" in fig:
                print(f"{x:>7} {arm:<7}  error: {fig['error']}")
                continue
            print(
                f"{x:>7} {arm:<7}{fig['tokens_per_s']:>10.0f}{fig['peak_growth_mb']:>11.0f}"
                f"{fig['peak_rss_mb']:>13.0f}{fig['pre_step_rss_mb']:>8.0f}"
            )
        for arm, r in entry["ratios"].items():
            print(
                f"{x:>7} kd / {arm}: speed {r['speed_ratio']:.2f}x, growth "
                f"{r['memory_ratio']:.2f}x, peak RSS {r['rss_ratio']:.2f}x"
            )


def run_long(args: argparse.Namespace, work: Path) -> list[str]:
    """The long-sequence group: measure, print, write, judge; return its failures."""
    mode = "quick" if args.quick else "full"
    lengths = QUICK_LONG_LENGTHS if args.quick else LONG_LENGTHS
    sizes = run_long_sweep("length", [(LONG_VOCAB, t) for t in lengths], LONG_STEPS, work)
    payload: dict[str, Any] = {
        "steps": LONG_STEPS, "timed_steps": LONG_STEPS - 1, "batch": LONG_BATCH,
        "vocab": LONG_VOCAB, "lengths": list(lengths), "sizes": sizes,
        "student": STUDENT, "teacher": TEACHER,
        "liger_arm": "plain loop + LigerFusedLinearJSDLoss(beta=0, compiled=False); "
        "GKDConfig(use_liger_kernel=True) fails on CPU (Triton: 0 active drivers)",
    }  # fmt: skip
    if not args.quick:
        points = [(v, VOCAB_SWEEP_LENGTH) for v in VOCAB_SWEEP if v != LONG_VOCAB]
        by_vocab = run_long_sweep("vocab", points, LONG_STEPS, work)
        by_vocab[str(LONG_VOCAB)] = sizes[str(VOCAB_SWEEP_LENGTH)]  # measured above
        payload["vocab_sweep"] = {"length": VOCAB_SWEEP_LENGTH, "sizes": by_vocab}
    for entry in [*sizes.values(), *payload.get("vocab_sweep", {}).get("sizes", {}).values()]:
        for arm in LONG_ARMS:
            entry[arm].pop("late_imports", None)
    print_long(f"long sequences, vocab {LONG_VOCAB:,}, batch {LONG_BATCH} (x = length)", sizes)
    if "vocab_sweep" in payload:
        print_long(f"vocab sweep at length {VOCAB_SWEEP_LENGTH} (x = vocab)",
                   payload["vocab_sweep"]["sizes"])  # fmt: skip
    longest = str(max(lengths))
    failures = target_misses(int(longest), sizes[longest]["ratios"]) if not args.quick else []
    payload["targets"] = {"length": int(longest), "bounds": LONG_TARGETS,
                          "missed": failures, "judged": not args.quick}  # fmt: skip
    print(f"targets at length {longest}: " + ("; ".join(failures) or "all met")
          if not args.quick else "targets: judged at length 2048, full mode only")  # fmt: skip
    merge_json(RESULTS, "long", mode, payload)
    ratios = {x: e["ratios"] for x, e in sizes.items()}
    if args.update_baseline:  # a new reference is not judged by the one it replaces
        merge_json(BASELINE, "long", mode, {"sizes": ratios})
        return failures
    return failures + long_regressions(mode, ratios)


def long_regressions(mode: str, ratios: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Each length's kd / arm ratios against ``baseline["long"][mode]``."""
    data = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    stored = data.get("long", {}).get(mode, {}).get("sizes", {})
    if not stored:
        print(f"no long/{mode} baseline in {BASELINE.relative_to(ROOT)}; use --update-baseline")
    failures = []
    for x, by_arm in ratios.items():
        for arm, r in by_arm.items():
            base = stored.get(x, {}).get(arm, {})
            found = regressions(int(x), r, base, tolerance(), "length")
            failures += [f"kd / {arm}, {f}" for f in found]
    return failures


WORKERS = {"kd": worker_kd, "trl": worker_trl,
           "long-kd": long_kd, "long-trl": long_trl, "long-liger": long_liger}  # fmt: skip


def main(argv: list[str]) -> int:
    """Run the chosen groups; print the tables; compare with the baseline and the targets."""
    if argv[:1] == ["--worker"]:
        fn = WORKERS[argv[1]]
        print(json.dumps(fn(json.loads(argv[2]), int(argv[3]), int(argv[4]), Path(argv[5]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, 20 steps; length 512")
    parser.add_argument("--group", choices=("all", "batch", "long"), default="all")
    parser.add_argument("--update-baseline", action="store_true")
    args, _ = parser.parse_known_args(argv)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        if args.group in ("all", "batch"):
            (Path(tmp) / "batch").mkdir()
            failures += run_batch(args, Path(tmp) / "batch")
        if args.group in ("all", "long"):
            (Path(tmp) / "long").mkdir()
            failures += run_long(args, Path(tmp) / "long")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
