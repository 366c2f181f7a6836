"""Benchmark the KD dataset reader: throughput and memory as the file grows to 1M records.

A synthetic dataset (prompt + completion + a span, ~230 bytes a row) is written once at
the largest size; smaller sizes are its first rows. Each measurement runs in a fresh
interpreter, so its resident-set high-water mark (``ru_maxrss``) is its own. Paths:

``json``
    ``json.loads`` of every line: the reference, measured in the same run, so that the
    figures below are ratios that do not depend on the machine's speed.
``stream``
    :func:`kd_train.data.read_records` with ``unique_ids=False``: parse + validate, one
    record in memory at a time. Its peak RSS must stay flat as the file grows.
``read``
    :func:`kd_train.data.read_records` as the trainer calls it (duplicate ids rejected):
    the id index grows by one entry per row; its cost is reported in bytes per row.
``tokenize``
    ``read`` + :func:`kd_train.data.encode_records` with the tiny test tokenizer
    (tokens/s; at the two smallest sizes only).

Figures: rows/s and peak RSS per path and size; ``rss_ratio`` = peak(largest) /
peak(smallest) per path; ``id_index_bytes_per_row``; and the A/B time ratios
``stream_vs_json`` / ``read_vs_json`` (interleaved json/stream/read rounds at the middle
size, median of 3). Checks (exit 1): ``stream`` ``rss_ratio`` above
``[perf.data] rss_flat_ratio``; the id index above ``[perf.data] id_index_max_bytes_per_row``
(full mode: with ``--quick`` the largest file, 100k rows, is where the index first spills
to disk, so its fixed 8 MiB Bloom filter dominates a per-row figure; reported only);
an A/B ratio or ``rss_ratio`` worse than the baseline ``qa/perf/baselines/data.json`` by
more than ``[perf.data] tolerance`` (default ``[perf] tolerance``).

Usage: ``python bench_data.py [--quick] [--update-baseline]``; results go to
``data.json`` in ``OUT``. Sizes: 10k, 100k, 1M rows (``--quick``: 5k, 20k, 100k).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from kd_train.testing import synthetic_record
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[3]
NAME = "data"
#: This run's figures: ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it), else
#: the git-ignored ``qa/reports/perf``; ``qa/perf/results`` changes only with ``--record``.
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / f"{NAME}.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / f"{NAME}.json"
GATES = ROOT / "qa" / "gates.toml"
#: Figures compared with the baseline (all ratios: lower is better).
COMPARED = ("stream_vs_json", "read_vs_json", "stream_rss_ratio")


def sizes(quick: bool) -> list[int]:
    """Row counts measured, smallest first."""
    return [5_000, 20_000, 100_000] if quick else [10_000, 100_000, 1_000_000]


def write_dataset(path: Path, rows: int) -> list[int]:
    """Write ``rows`` synthetic records; return the byte offset after each row."""
    rng = random.Random(0)  # noqa: S311 - reproducible benchmark data, not security
    ends = []
    size = 0
    with path.open("wb", buffering=1 << 20) as out:
        for i in tqdm(range(rows), desc="write dataset", unit="row", unit_scale=True):
            row = synthetic_record(i, rng)
            line = json.dumps(row, separators=(",", ":")).encode() + b"\n"
            out.write(line)
            size += len(line)
            ends.append(size)
    return ends


def planted_slowdown(bench: str, path: str) -> int:
    """How many times ``path``'s timed work runs: 1, unless ``KD_BENCH_SLOWDOWN`` plants more.

    ``KD_BENCH_SLOWDOWN=BENCH:PATH=N[,...]`` is for the qa tests only (they plant a 2x
    slowdown and see the gate fail).
    """
    for item in os.environ.get("KD_BENCH_SLOWDOWN", "").split(","):
        where, _, factor = item.partition("=")
        if where == f"{bench}:{path}":
            return int(factor)
    return 1


def worker(path: str, mode: str, tokenizer_dir: str | None) -> dict[str, Any]:
    """Read every row of ``path`` the way ``mode`` says; return the figures of this process."""
    from kd_train.data import TokenizeConfig, encode_records, read_records

    tokenizer = None
    if tokenizer_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    began = time.perf_counter()
    count = tokens = 0
    if mode == "json":
        with open(path, "rb") as handle:
            for line in handle:
                json.loads(line)
                count += 1
    else:
        for _ in range(planted_slowdown(NAME, mode)):
            count = tokens = 0
            records = read_records(path, unique_ids=mode != "stream")
            if mode == "tokenize":
                for example in encode_records(records, tokenizer, TokenizeConfig()):
                    tokens += len(example.input_ids)
                    count += 1
            else:
                for _ in records:
                    count += 1
    seconds = time.perf_counter() - began
    return {"rows": count, "seconds": seconds, "peak_rss": peak_rss(), "tokens": tokens}


def peak_rss() -> int:
    """This process's RSS high-water mark in bytes (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that over ``fork`` + ``exec`` from the parent, so a
    child of a big parent would report the parent's size.
    """
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def prefix_files(path: Path, ends: list[int], counts: list[int]) -> dict[int, Path]:
    """Copy the first ``n`` rows of ``path`` to a file of its own for each ``n``."""
    files = {}
    for n in counts:
        target = path.with_name(f"rows-{n}.jsonl")
        with path.open("rb") as src, target.open("wb") as dst:
            left = ends[n - 1]
            while left:
                chunk = src.read(min(left, 1 << 22))
                dst.write(chunk)
                left -= len(chunk)
        files[n] = target
    return files


def measure(path: Path, mode: str, tokenizer_dir: str | None = None) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter."""
    cmd = [sys.executable, __file__, "--worker", str(path), mode, tokenizer_dir or ""]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def settings() -> dict[str, float]:
    """``[perf]`` with ``[perf.data]`` over it, from qa/gates.toml."""
    perf = tomllib.loads(GATES.read_text(encoding="utf-8")).get("perf", {})
    own = perf.get(NAME, {})
    return {
        "tolerance": float(own.get("tolerance", perf.get("tolerance", 1.25))),
        "rss_flat_ratio": float(own.get("rss_flat_ratio", 1.10)),
        "id_index_max_bytes_per_row": float(own.get("id_index_max_bytes_per_row", 256)),
    }


def run(quick: bool, work: Path) -> dict[str, Any]:
    """Measure every path at every size; return the results payload."""
    from kd_train.testing import save_tiny_llama

    counts = sizes(quick)
    path = work / "data.jsonl"
    ends = write_dataset(path, counts[-1])
    files = prefix_files(path, ends, counts)
    tokenizer_dir = str(save_tiny_llama(work / "tok", seed=0))
    table: dict[str, dict[str, Any]] = {}
    plan = [(n, m) for n in counts for m in ("json", "stream", "read")]
    plan += [(n, "tokenize") for n in counts[:2]]
    for n, mode in tqdm(plan, desc="measure", unit="run"):
        fig = measure(files[n], mode, tokenizer_dir if mode == "tokenize" else None)
        if fig["rows"] != n:
            raise SystemExit(f"{mode} at {n}: read {fig['rows']} rows, expected {n}")
        entry = table.setdefault(f"{n}", {"rows": n, "bytes": ends[n - 1]})
        entry[f"{mode}_rows_per_s"] = n / fig["seconds"]
        entry[f"{mode}_peak_rss_mb"] = fig["peak_rss"] / 2**20
        if mode == "tokenize":
            entry["tokenize_tokens_per_s"] = fig["tokens"] / fig["seconds"]
    # A/B: json, stream and read interleaved at the middle size; median of 3 rounds.
    middle = counts[1]
    times: dict[str, list[float]] = {"json": [], "stream": [], "read": []}
    for _ in tqdm(range(3), desc="A/B rounds", unit="round"):
        for mode in times:
            times[mode].append(measure(files[middle], mode)["seconds"])
    med = {mode: statistics.median(v) for mode, v in times.items()}
    small, large = table[str(counts[0])], table[str(counts[-1])]
    extra_rows = counts[-1] - counts[0]
    id_bytes = (
        (
            (large["read_peak_rss_mb"] - large["stream_peak_rss_mb"])
            - (small["read_peak_rss_mb"] - small["stream_peak_rss_mb"])
        )
        * 2**20
        / extra_rows
    )
    ratios = {
        "stream_vs_json": med["stream"] / med["json"],
        "read_vs_json": med["read"] / med["json"],
        "stream_rss_ratio": large["stream_peak_rss_mb"] / small["stream_peak_rss_mb"],
        "read_rss_ratio": large["read_peak_rss_mb"] / small["read_peak_rss_mb"],
        "json_rss_ratio": large["json_peak_rss_mb"] / small["json_peak_rss_mb"],
        "id_index_bytes_per_row": id_bytes,
    }
    return {
        "benchmark": NAME,
        "mode": "quick" if quick else "full",
        "bytes_per_row": large["bytes"] / large["rows"],
        "sizes": table,
        "ab_rows": middle,
        "ab_seconds": times,
        "ratios": ratios,
    }


def check(
    results: dict[str, Any], baseline: dict[str, float], gates: dict[str, float]
) -> list[str]:
    """Return the failures: targets from gates.toml, then the baseline comparison."""
    ratios = results["ratios"]
    failures = []
    if ratios["stream_rss_ratio"] > gates["rss_flat_ratio"]:
        failures.append(
            f"stream peak RSS grew {ratios['stream_rss_ratio']:.3f}x from the smallest to the "
            f"largest file > {gates['rss_flat_ratio']} ([perf.data] rss_flat_ratio)"
        )
    full = results["mode"] == "full"
    if full and ratios["id_index_bytes_per_row"] > gates["id_index_max_bytes_per_row"]:
        failures.append(
            f"id index costs {ratios['id_index_bytes_per_row']:.0f} bytes/row > "
            f"{gates['id_index_max_bytes_per_row']} ([perf.data] id_index_max_bytes_per_row)"
        )
    for name in COMPARED:
        base = baseline.get(name)
        if base and ratios[name] / base > gates["tolerance"]:
            failures.append(
                f"{name}: {ratios[name]:.3f} vs baseline {base:.3f} (> {gates['tolerance']}x)"
            )
    return failures


def print_table(results: dict[str, Any], baseline: dict[str, float]) -> None:
    """Print rows/s and peak RSS per size and path, then the ratios against the baseline."""
    print(f"\n{'rows':>9}{'MB':>8}  " + "".join(f"{m + ' r/s':>14}{'MB':>7}" for m in
          ("json", "stream", "read")))  # fmt: skip
    for entry in results["sizes"].values():
        cells = "".join(
            f"{entry[f'{m}_rows_per_s']:>14.0f}{entry[f'{m}_peak_rss_mb']:>7.0f}"
            for m in ("json", "stream", "read")
        )
        print(f"{entry['rows']:>9}{entry['bytes'] / 1e6:>8.1f}  {cells}")
    print(f"\n{'ratio':<24}{'value':>10}{'baseline':>10}")
    for name, value in results["ratios"].items():
        base = baseline.get(name)
        print(f"{name:<24}{value:>10.3f}{(f'{base:.3f}' if base else '-'):>10}")


def main(argv: list[str]) -> int:
    """Run the benchmark (or one worker); exit 1 on a failed check."""
    if argv[:1] == ["--worker"]:
        fig = worker(argv[1], argv[2], argv[3] or None)
        print(json.dumps(fig))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k/20k/100k rows, about a minute")
    parser.add_argument("--update-baseline", action="store_true")
    args, _ = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="kd-bench-data-") as tmp:
        results = run(args.quick, Path(tmp))
    from kd_train.atomic import atomic_write_text

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(results, indent=2, sort_keys=True) + "\n")
    stored = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
    baseline = stored.get(results["mode"], {})
    print_table(results, baseline)
    # --update-baseline records a new reference: only the absolute gates (flat memory, id
    # index size) can fail it, not the comparison with the baseline it replaces.
    failures = check(results, {} if args.update_baseline else baseline, settings())
    if args.update_baseline:
        stored[results["mode"]] = {k: results["ratios"][k] for k in COMPARED}
        atomic_write_text(BASELINE, json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"baseline updated: {BASELINE.relative_to(ROOT)} [{results['mode']}]")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
