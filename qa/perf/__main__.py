"""``python -m qa.perf bench [ARGS]``: the benchmark suite (what ``nox -s bench`` runs).

``bench`` runs every ``packages/*/benchmarks/bench_*.py`` (extra arguments such as
``--quick`` are passed to each). Each script prints its table, writes its figures to
``qa/perf/results/<name>.json`` and exits non-zero when a figure regresses beyond the
tolerance in ``qa/gates.toml``. The runner then merges those files into
``qa/perf/results/<machine-id>.json`` (see :mod:`qa.perf.common` for the id) and draws one
PNG chart per group into ``docs/_static/perf/``. ``bench --only NAME`` runs one script.
The scripts run as subprocesses: this runner imports none of the packages. The load and
fault scenarios are tests of the product and live in ``tests/load/`` (``nox -s load``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qa.perf.common import ROOT


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
    scripts, rest = select(benchmark_scripts(), args)
    if not scripts:
        print("qa.perf: no benchmark scripts found under packages/*/benchmarks/", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        print(f"== {script.relative_to(ROOT)}", flush=True)
        if subprocess.run([sys.executable, str(script), *rest], check=False).returncode != 0:
            failed.append(script.name)
    from qa.perf.report import draw_charts, merge

    target = merge()
    charts = draw_charts()
    print(f"qa.perf: results merged into {target.relative_to(ROOT)}; "
          f"{len(charts)} charts in docs/_static/perf/")  # fmt: skip
    if failed:
        print(f"qa.perf: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``bench``."""
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])
    print("usage: python -m qa.perf bench [ARGS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
