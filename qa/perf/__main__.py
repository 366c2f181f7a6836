"""``python -m qa.perf bench [ARGS]``: run every ``packages/*/benchmarks/bench_*.py``.

Each benchmark script prints its table, writes its figures as JSON under ``qa/perf/`` and
exits non-zero when a figure regresses beyond the tolerance in ``qa/gates.toml``; extra
arguments (e.g. ``--quick``) are passed to every script. ``load`` runs the load scenarios.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def benchmark_scripts(root: Path = ROOT) -> list[Path]:
    """Return the benchmark scripts of all packages, in a stable order."""
    return sorted(root.glob("packages/*/benchmarks/bench_*.py"))


def run_bench(args: list[str]) -> int:
    """Run each benchmark script; return 1 if any failed or none exists."""
    scripts = benchmark_scripts()
    if not scripts:
        print("qa.perf: no benchmark scripts found under packages/*/benchmarks/", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        print(f"== {script.relative_to(ROOT)}", flush=True)
        if subprocess.run([sys.executable, str(script), *args], check=False).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"qa.perf: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``bench`` and ``load``."""
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])
    if argv[:1] == ["load"]:
        print("qa.perf: the load scenarios are not built yet", file=sys.stderr)
        return 1
    print("usage: python -m qa.perf bench|load [ARGS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
