"""``python -m tests.load.runner [--quick] [--only NAME] [--record]``: load and fault scenarios.

What ``nox -s load`` runs. Each scenario (a module of ``tests/load/scenarios/``) runs at its
``FULL`` configuration, or ``QUICK`` with ``--quick``; the runner prints what each tried and
verified, writes ``load.json`` (the scenarios run this time replace their entries), then
refreshes the machine file and the charts (:mod:`qa.perf.report`), and exits 1 if any check
failed or a scenario raised. Like ``python -m qa.perf bench``, a routine run writes under the
git-ignored ``qa/reports/perf/`` only; ``--record`` writes the record (``qa/perf/results/``,
charts in ``docs/_static/perf/``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from typing import Any

from qa.perf.common import DOCS_CHARTS, RESULTS, SCRATCH, read_json
from qa.perf.report import draw_charts, merge
from qa.summary import write_json
from tests.load.scenarios import ScenarioResult

#: Scenario modules, in the order of the issue (cheapest first within a run).
SCENARIOS = {
    "generate_faults": "tests.load.scenarios.generate_faults",
    "generate_kill": "tests.load.scenarios.generate_kill",
    "train_kill": "tests.load.scenarios.train_kill",
    "shared_budget": "tests.load.scenarios.shared_budget",
    "validator": "tests.load.scenarios.validator",
}


def run_one(name: str, quick: bool) -> ScenarioResult:
    """Import scenario ``name`` and run it at its QUICK or FULL configuration."""
    module = importlib.import_module(SCENARIOS[name])
    config = module.QUICK if quick else module.FULL
    began = time.monotonic()
    try:
        result: ScenarioResult = module.run(config)
    except Exception as exc:  # a crash is a failed scenario, reported like the others
        result = ScenarioResult(name)
        result.check("scenario ran to the end", f"{type(exc).__name__}: {exc}", "no exception",
                     ok=False)  # fmt: skip
        result.notes.append(traceback.format_exc(limit=5))
    result.figures["wall_seconds"] = time.monotonic() - began
    return result


def main(argv: list[str]) -> int:
    """Run the selected scenarios; store their results; redraw the charts; 1 if any failed."""
    parser = argparse.ArgumentParser(prog="python -m tests.load.runner", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the record (qa/perf/results, docs/_static/perf), not qa/reports/perf",
    )
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    results, charts = (RESULTS, DOCS_CHARTS) if args.record else (SCRATCH, SCRATCH / "charts")
    results.mkdir(parents=True, exist_ok=True)
    load_results = results / "load.json"
    stored: dict[str, Any] = read_json(load_results) if load_results.is_file() else {}
    failed = []
    for name in names:
        print(f"-- {name} ({'quick' if args.quick else 'full'})", flush=True)
        result = run_one(name, args.quick)
        print(result.report(), flush=True)
        stored[name] = {"mode": "quick" if args.quick else "full", **result.to_dict()}
        write_json(load_results, stored)
        if not result.passed:
            failed.append(name)
    print(f"\nload: {len(names) - len(failed)}/{len(names)} scenarios passed"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    merge(results)
    draw_charts(results, charts)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
