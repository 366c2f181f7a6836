"""Scenario 5: the JSONL validator on a large file with 1% corrupt rows, in bounded memory.

A KD dataset of ``target_bytes`` (1 GB in the full run) is generated on the fly in a temp
directory: realistic records (prompt, completion, ``teacher_topk`` with k = 4, a span),
and with probability ``corrupt_fraction`` a corrupt row instead, of one of seven kinds
(truncated JSON, wrong field type, blank line, bytes that are not UTF-8, a duplicate id,
a span outside the completion, a positive log-prob). The line numbers of the corrupt rows
are remembered.

``kd_train.data.validate_file(mode="quarantine")`` then runs in a fresh interpreter (so
its resident-set high-water mark is its own) on the big file and on a small one made the
same way (``probe_fraction`` of the size). Verified:

- every row is counted: ``rows == accepted + quarantined`` and ``rows`` is the number
  written;
- every corrupt row, and no other, is in the quarantine file, with its line number;
- memory: the peak RSS grows by at most ``max_bytes_per_row`` per extra row between the
  small and the big file (a reader that held lines or records would grow by ~1 kB per
  row; what may grow is the duplicate-id index, one entry per row). The ratio
  peak(big) / peak(small) is reported.

``python -m tests.load.scenarios.validator --worker FILE QUARANTINE`` is the measured child.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_train.testing import synthetic_record
from tqdm import tqdm

from tests.load.scenarios import ScenarioResult

#: The repository root: the measured child runs ``python -m tests.load...`` from there.
ROOT = Path(__file__).resolve().parents[3]
#: The corrupt-row kinds and the validator code each must produce.
CORRUPTIONS = {
    "truncated": "bad_json",
    "wrong_type": "wrong_type",
    "blank": "blank_line",
    "non_utf8": "non_utf8",
    "duplicate_id": "duplicate_id",
    "span_out_of_range": "span_out_of_range",
    "positive_logprob": "bad_logprob",
}


@dataclass(frozen=True)
class ValidatorConfig:
    """Size and limits of one run of the scenario."""

    target_bytes: int
    corrupt_fraction: float = 0.01
    probe_fraction: float = 0.125
    max_bytes_per_row: float = 256.0
    max_seconds: float = 900.0
    seed: int = 0
    progress: bool = True


FULL = ValidatorConfig(target_bytes=1_000_000_000)
QUICK = ValidatorConfig(target_bytes=20_000_000)


@dataclass
class Written:
    """What :func:`write_dataset` wrote: total rows, bytes, corrupt line numbers by kind."""

    rows: int
    bytes: int
    corrupt: dict[int, str]


def _corrupt_row(kind: str, index: int, rng: random.Random) -> bytes:
    row = synthetic_record(index, rng, topk=True)
    if kind == "truncated":
        return json.dumps(row).encode()[: rng.randint(5, 60)]
    if kind == "wrong_type":
        row["completion"] = 42
    elif kind == "blank":
        return b""
    elif kind == "non_utf8":
        return json.dumps(row).encode()[:30] + b"\xff\xfe" + b'"}'
    elif kind == "duplicate_id":
        row["id"] = "r1"  # line 1 is always valid (see write_dataset)
    elif kind == "span_out_of_range":
        row["spans"] = [{"kind": "integration", "start": 0, "end": 10_000}]
    elif kind == "positive_logprob":
        row["teacher_topk"]["logprobs"][0][0] = 0.5
    return json.dumps(row, separators=(",", ":")).encode()


def write_dataset(
    path: Path, target_bytes: int, corrupt_fraction: float, seed: int, progress: bool = False
) -> Written:
    """Write rows to ``path`` until it holds ``target_bytes``; return what was written.

    Valid rows are drawn from a pool of 256 bodies (only the id changes), so writing a
    gigabyte takes seconds, not minutes. The first row is always valid.
    """
    rng = random.Random(seed)
    kinds = sorted(CORRUPTIONS)
    pool = [synthetic_record(0, rng, topk=True) for _ in range(256)]
    bodies = [json.dumps(r, separators=(",", ":")).split('"id":"r0"', 1) for r in pool]
    corrupt: dict[int, str] = {}
    size = rows = 0
    with (
        path.open("wb", buffering=1 << 20) as out,
        tqdm(
            total=target_bytes, unit="B", unit_scale=True, desc="write", disable=not progress
        ) as bar,
    ):
        while size < target_bytes:
            rows += 1
            if rows > 1 and rng.random() < corrupt_fraction:
                kind = kinds[rows % len(kinds)]
                line = _corrupt_row(kind, rows, rng)
                corrupt[rows] = kind
            else:
                head, tail = bodies[rows % len(bodies)]
                line = f'{head}"id":"r{rows}"{tail}'.encode()
            out.write(line + b"\n")
            size += len(line) + 1
            if rows % 4096 == 0:
                bar.update(size - bar.n)
        bar.update(size - bar.n)
    return Written(rows, size, corrupt)


def quarantined_lines(path: Path) -> dict[int, str]:
    """``line -> code`` of every entry in a quarantine file (read line by line)."""
    found: dict[int, str] = {}
    with path.open("rb") as handle:
        for raw in handle:
            entry = json.loads(raw)
            found[int(entry["line"])] = str(entry["code"])
    return found


def measure(dataset: Path, quarantine: Path, config: ValidatorConfig) -> dict[str, Any]:
    """Validate ``dataset`` in a fresh interpreter; return its report, RSS and seconds."""
    cmd = [sys.executable, "-m", "tests.load.scenarios.validator", "--worker"]
    cmd += [str(dataset), str(quarantine), "1" if config.progress else "0"]
    proc = subprocess.run(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=config.max_seconds, check=True
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark in bytes (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that over ``fork`` + ``exec`` from the parent, so a
    fresh child of a big parent would report the parent's size.
    """
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_bytes() -> int:
    """This process's current resident set size, in bytes."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(dataset: str, quarantine: str, progress: bool) -> dict[str, Any]:
    """The measured child: validate in quarantine mode; report counts, RSS and time."""
    from kd_train.data import validate_file

    before = rss_bytes()
    began = time.perf_counter()
    report = validate_file(
        dataset, mode="quarantine", quarantine_path=quarantine, progress=progress
    )
    seconds = time.perf_counter() - began
    return {
        "report": report.to_dict(),
        "rss_after_imports": before,
        "peak_rss": peak_rss_bytes(),
        "seconds": seconds,
    }


def run(config: ValidatorConfig) -> ScenarioResult:
    """Run the scenario (see the module docstring) and return its result."""
    result = ScenarioResult("validator")
    with tempfile.TemporaryDirectory(prefix="kd-load-validator-") as tmp:
        work = Path(tmp)
        runs = {}
        for label, size in (
            ("small", int(config.target_bytes * config.probe_fraction)),
            ("big", config.target_bytes),
        ):
            data, quarantine = work / f"{label}.jsonl", work / f"{label}.quarantine.jsonl"
            began = time.perf_counter()
            written = write_dataset(
                data, size, config.corrupt_fraction, config.seed, config.progress
            )
            write_seconds = time.perf_counter() - began
            figures = measure(data, quarantine, config)
            found = quarantined_lines(quarantine)
            runs[label] = (written, figures, found)
            result.tried[f"{label}: rows written"] = written.rows
            result.tried[f"{label}: bytes"] = written.bytes
            result.tried[f"{label}: corrupt rows planted"] = len(written.corrupt)
            report = figures["report"]
            result.check(f"{label}: rows counted", report["rows"], written.rows)
            result.check(
                f"{label}: rows == accepted + quarantined",
                report["accepted"] + report["quarantined"],
                report["rows"],
            )
            result.check(f"{label}: rows quarantined", report["quarantined"], len(written.corrupt))
            wrong = sorted(set(found) ^ set(written.corrupt))
            result.check(f"{label}: quarantined line numbers differ from planted", len(wrong), 0)
            bad_codes = [n for n, k in written.corrupt.items() if found.get(n) != CORRUPTIONS[k]]
            result.check(f"{label}: rows quarantined with the wrong code", len(bad_codes), 0)
            data.unlink()
            result.figures[f"{label}_write_mb_per_s"] = written.bytes / write_seconds / 1e6
            result.figures[f"{label}_rows_per_s"] = written.rows / figures["seconds"]
            result.figures[f"{label}_peak_rss_mb"] = figures["peak_rss"] / 2**20
        (small, fs, _), (big, fb, _) = runs["small"], runs["big"]
        per_row = (fb["peak_rss"] - fs["peak_rss"]) / max(1, big.rows - small.rows)
        result.figures["peak_rss_ratio_big_small"] = fb["peak_rss"] / fs["peak_rss"]
        result.figures["rss_growth_bytes_per_row"] = per_row
        result.figures["bytes_per_row"] = big.bytes / big.rows
        result.check(
            "peak RSS growth per extra row (bytes)",
            round(per_row, 1),
            f"<= {config.max_bytes_per_row}",
            ok=per_row <= config.max_bytes_per_row,
        )
        figs = result.figures
        result.notes.append(
            f"validated {big.rows} rows ({big.bytes / 1e6:.0f} MB) at "
            f"{figs['big_rows_per_s']:.0f} rows/s; peak RSS "
            f"{figs['small_peak_rss_mb']:.0f} MB -> {figs['big_peak_rss_mb']:.0f} MB"
        )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2], sys.argv[3], sys.argv[4:5] == ["1"])))
    else:
        print(run(QUICK).report())
