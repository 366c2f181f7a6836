"""``python -m qa.perf bench [--record] [ARGS]``: the benchmark suite (``nox -s bench``).

``bench`` runs every ``packages/*/benchmarks/bench_*.py`` (extra arguments such as
``--quick`` or ``--update-baseline`` are passed to each). Each script prints its table,
writes its figures to ``<name>.json`` and exits non-zero when a figure regresses beyond the
tolerance in ``qa/gates.toml``. The runner then merges those files into
``<machine-id>.json`` (see :mod:`qa.perf.common` for the id) and draws one PNG chart per
group. ``bench --only NAME`` runs one script.

A routine run writes under ``qa/reports/perf/`` only (git-ignored; charts in its
``charts/``), so it leaves the tree as it was. ``--record`` is the one way to change the
record: figures into ``qa/perf/results/`` and charts into ``docs/_static/perf/``, which the
docs site shows. (``--update-baseline`` changes ``qa/perf/baselines/``, also only when asked.)
The scripts run as subprocesses, told where to write by ``KD_PERF_RESULTS`` and
``KD_PERF_CHARTS``: this runner imports none of the packages. The load and fault scenarios
are tests of the product and live in ``tests/load/`` (``nox -s load``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qa.perf.common import DOCS_CHARTS, RESULTS, ROOT, SCRATCH


def benchmark_scripts(root: Path = ROOT) -> list[Path]:
    """Return the benchmark scripts of all packages, in a stable order."""
    return sorted(root.glob("packages/*/benchmarks/bench_*.py"))


def select(scripts: list[Path], args: list[str]) -> tuple[list[Path], list[str]]:
    """Apply ``--only NAME`` (``bench_NAME.py``, repeatable); return scripts and the rest."""
    only, rest = [], []
    it = iter(args)
    for arg in it:
        if arg == "--only":
            only.append(next(it, ""))
        else:
            rest.append(arg)
    if only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in only]
    return scripts, rest


def run_bench(args: list[str]) -> int:
    """Run each benchmark script, then merge results and draw charts; 1 if any failed."""
    record = "--record" in args
    scripts, rest = select(benchmark_scripts(), [a for a in args if a != "--record"])
    if not scripts:
        print("qa.perf: no benchmark scripts found under packages/*/benchmarks/", file=sys.stderr)
        return 1
    results, charts = (RESULTS, DOCS_CHARTS) if record else (SCRATCH, SCRATCH / "charts")
    results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KD_PERF_RESULTS": str(results), "KD_PERF_CHARTS": str(charts)}
    failed = []
    for script in scripts:
        print(f"== {script.relative_to(ROOT)}", flush=True)
        cmd = [sys.executable, str(script), *rest]
        if subprocess.run(cmd, check=False, env=env).returncode != 0:
            failed.append(script.name)
    from qa.perf.report import draw_charts, merge

    target = merge(results)
    drawn = draw_charts(results, charts)
    print(f"qa.perf: results merged into {target.relative_to(ROOT)}; "
          f"{len(drawn)} charts in {charts.relative_to(ROOT)}/"
          + ("" if record else " (not recorded: --record keeps them in the tree)"))  # fmt: skip
    if failed:
        print(f"qa.perf: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``bench``."""
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])
    print("usage: python -m qa.perf bench [--record] [--only NAME] [ARGS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
