"""Benchmark the start-up of the three CLIs (``--help``, a usage error) against ``python -c pass``.

Each case runs the console script (``kd-train``, ``kd-eval``, ``kd-convert``) in a fresh
process, interleaved with ``python -c pass`` (A/B rounds), and takes the median wall time of
each. Figures per case: ``<cli> <case> s`` (seconds) and ``<cli> <case> ratio`` (seconds /
``python -c pass`` seconds, measured in the same rounds, so the ratio hardly depends on the
machine). Checks (exit 1): a case slower than ``[perf.startup] max_seconds`` (0.5 s); a
ratio worse than the baseline ``qa/perf/baselines/startup.json`` by more than
``[perf.startup] tolerance`` (default ``[perf] tolerance``).

Usage: ``python bench_startup.py [--quick] [--update-baseline]``; results go to
``startup.json`` in ``OUT``. Rounds: 15 (``--quick``: 5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
NAME = "startup"
#: This run's figures: ``$KD_PERF_RESULTS`` (``python -m qa.perf bench`` sets it), else
#: the git-ignored ``qa/reports/perf``; ``qa/perf/results`` changes only with ``--record``.
OUT = Path(os.environ.get("KD_PERF_RESULTS") or ROOT / "qa" / "reports" / "perf")
RESULTS = OUT / f"{NAME}.json"
BASELINE = ROOT / "qa" / "perf" / "baselines" / f"{NAME}.json"
GATES = ROOT / "qa" / "gates.toml"
CLIS = ("kd-train", "kd-eval", "kd-convert")
#: Case name to the arguments given to each CLI.
CASES = {"help": ["--help"], "usage-error": ["--no-such-option"]}


def command(cli: str) -> list[str]:
    """The console script next to this interpreter, or the same entry point through ``-c``."""
    script = Path(sys.executable).parent / cli
    if script.is_file():
        return [str(script)]
    module = cli.replace("-", "_")
    return [sys.executable, "-c", f"from {module}.cli import main; raise SystemExit(main())"]


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


def wall_seconds(argv: list[str], repeat: int = 1) -> float:
    """Wall time of one run of ``argv`` (output discarded); ``repeat`` runs in a row."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    for _ in range(repeat):
        subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
        )
    return time.perf_counter() - start


def measure(rounds: int) -> dict[str, float]:
    """Median seconds of every case and of ``python -c pass``, interleaved; plus the ratios."""
    runs: dict[str, list[float]] = {"python -c pass": []}
    argvs = {
        f"{cli} {case}": [*command(cli), *args] for cli in CLIS for case, args in CASES.items()
    }
    for name, argv in argvs.items():  # warm the file cache: the first run is not timed
        runs[name] = []
        wall_seconds(argv)
    for _ in range(rounds):
        runs["python -c pass"].append(wall_seconds([sys.executable, "-c", "pass"]))
        for name, argv in argvs.items():
            runs[name].append(wall_seconds(argv, planted_slowdown(NAME, name.split()[0])))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    reference = medians["python -c pass"]
    figures = {f"{name} s": value for name, value in medians.items()}
    figures.update({f"{name} ratio": medians[name] / reference for name in argvs})
    return figures


def settings() -> tuple[float, float]:
    """``(max_seconds, tolerance)`` from ``[perf.startup]`` (``[perf] tolerance`` by default)."""
    perf = tomllib.loads(GATES.read_text(encoding="utf-8")).get("perf", {})
    own = perf.get(NAME, {})
    return float(own.get("max_seconds", 0.5)), float(own.get("tolerance", perf.get("tolerance")))


def check(figures: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """One line per case over the time target or past the baseline ratio's tolerance."""
    max_seconds, tol = settings()
    failures = [
        f"{name}: {value:.3f} s > target {max_seconds} s"
        for name, value in figures.items()
        if name.endswith(" s") and not name.startswith("python") and value > max_seconds
    ]
    failures += [
        f"{name}: {figures[name]:.2f} vs baseline {base:.2f} (tolerance {tol}x)"
        for name, base in baseline.items()
        if name in figures and base > 0 and figures[name] / base > tol
    ]
    return failures


def main(argv: list[str]) -> int:
    """Run the benchmark; exit 1 when a CLI starts too slowly or regressed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    parser.add_argument("--update-baseline", action="store_true")
    args, _ = parser.parse_known_args(argv)
    mode = "quick" if args.quick else "full"
    figures = measure(5 if args.quick else 15)
    results: dict[str, Any] = {"benchmark": NAME, "mode": mode, "figures": figures}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    baselines = json.loads(BASELINE.read_text(encoding="utf-8")) if BASELINE.is_file() else {}
    base = baselines.get(mode, {})
    print(f"\nCLI start-up ({mode}), median wall time; ratio = time / `python -c pass`")
    print(f"{'case':<28}{'seconds':>9}{'ratio':>8}{'baseline':>10}")
    for name in ["python -c pass", *(f"{c} {k}" for c in CLIS for k in CASES)]:
        ratio = figures.get(f"{name} ratio", 1.0)
        shown = base.get(f"{name} ratio")
        base_text = f"{shown:10.1f}" if shown else f"{'-':>10}"
        print(f"{name:<28}{figures[name + ' s']:9.3f}{ratio:8.1f}{base_text}")
    if args.update_baseline:
        baselines[mode] = {k: v for k, v in figures.items() if k.endswith(" ratio")}
        BASELINE.write_text(json.dumps(baselines, indent=2, sort_keys=True) + "\n", "utf-8")
        print(f"baseline updated: {BASELINE.relative_to(ROOT)} [{mode}]")
        return 0
    failures = check(figures, base)
    for line in failures:
        print(f"REGRESSION {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
