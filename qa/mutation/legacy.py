"""The mutatest engine (``--engine mutatest``): how the gate ran before the warm engine.

Kept to measure the two side by side, and because it is the reference the warm engine's
speed-up is quoted against. For each module: copy the packages to a temp dir (mutatest
writes mutated bytecode into ``__pycache__``; the working tree is never touched), run
mutatest 3.1.0 in full mode (``-m f``) through ``qa/mutation/shim.py`` on ``nlocations``
sampled locations with the module's tests, one fresh pytest process per trial, and parse its
report. mutatest runs with its own Python: ``$KD_MUTATEST_PYTHON`` (set by the nox session),
else this interpreter if it can import mutatest.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa import gates
from qa.mutation.report import Counts, Report, parse

SHIM = Path(__file__).resolve().parent / "shim.py"
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "*.pyc")


@dataclass(frozen=True)
class Outcome:
    """The verdict on one module."""

    module: str
    status: str  # ok, BELOW FLOOR, PENDING, MISSING, ERROR, NOTHING CHANGED
    floor: float
    report: Report | None = None
    note: str = ""

    @property
    def failed(self) -> bool:
        """True when this module fails the gate."""
        return self.status in ("BELOW FLOOR", "MISSING", "ERROR")


def mutatest_python() -> str:
    """The interpreter that has mutatest 3.1.0 installed."""
    exe = os.environ.get("KD_MUTATEST_PYTHON")
    if exe:
        return exe
    if importlib.util.find_spec("mutatest") is not None:
        return sys.executable
    raise SystemExit(
        "qa.mutation: mutatest not found: run `nox -s mutation` (it builds mutatest's venv), "
        "or set KD_MUTATEST_PYTHON to a Python with mutatest==3.1.0"
    )


def copy_tree(root: Path, dest: Path) -> None:
    """Copy what the tests need (packages, root conftest and pytest config) to ``dest``."""
    shutil.copytree(root / "packages", dest / "packages", ignore=IGNORE)
    for name in ("conftest.py", "pyproject.toml"):
        if (root / name).exists():
            shutil.copy2(root / name, dest / name)


def changed_files(base: str, root: Path = gates.ROOT) -> list[str]:
    """Python files changed between ``base`` and the working tree."""
    proc = subprocess.run(
        ["git", "diff", "--name-only", base, "--", "packages"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"qa.mutation: git diff against {base!r} failed: {proc.stderr.strip()}")
    return sorted(f for f in proc.stdout.split() if f.endswith(".py"))


def mutatest_args(
    target: str, tests: list[str], nlocations: int, cfg: gates.MutationGates, out: Path
) -> list[str]:
    """The mutatest command line for one target (file or folder) and its tests."""
    testcmd = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider"]
    return [
        "-s",
        target,
        "-t",
        shlex.join([*testcmd, *tests]),
        "-m",
        "f",
        "-n",
        str(nlocations),
        "--rseed",
        str(cfg.seed),
        "--timeout_factor",
        str(cfg.timeout_factor),
        "--nocov",
        "-o",
        str(out),
    ]


def run_target(
    copy: Path,
    target: str,
    tests: list[str],
    nlocations: int,
    cfg: gates.MutationGates,
    out: Path,
    budget_s: float,
) -> Report:
    """Run mutatest on ``target`` inside the copy; raise TimeoutError past the budget."""
    env = dict(os.environ)
    srcs = [str(p) for p in sorted((copy / "packages").glob("*/src"))]
    env["PYTHONPATH"] = os.pathsep.join([*srcs, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [mutatest_python(), str(SHIM), *mutatest_args(target, tests, nlocations, cfg, out)]
    print("+", shlex.join(cmd), flush=True)
    log = out.with_suffix(".log")
    with log.open("w", encoding="utf-8") as fh:
        # A session of its own, so that a run over budget is stopped with its test processes.
        proc = subprocess.Popen(
            cmd, cwd=copy, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_with_progress(proc, log, budget_s, nlocations)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            partial = partial_results(log.read_text(encoding="utf-8", errors="replace"))
            raise TimeoutError(
                f"over its budget of {budget_s / 60:.1f} min, {partial} (see {log}): "
                "lower nlocations in qa/gates.toml or narrow the module's tests"
            ) from exc
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        raise RuntimeError(f"mutatest exited {proc.returncode}; log {log}:\n{tail}")
    return parse(out.read_text(encoding="utf-8"))


#: Seconds between two progress lines while mutatest works on one target.
PROGRESS_EVERY_S = 60.0


def wait_with_progress(
    proc: subprocess.Popen[bytes], log: Path, budget_s: float, nlocations: int
) -> None:
    """Wait for ``proc``; every :data:`PROGRESS_EVERY_S` print how many mutants it tried.

    Raises:
        subprocess.TimeoutExpired: ``proc`` still runs after ``budget_s`` seconds.
    """
    start = time.monotonic()
    while True:
        left = budget_s - (time.monotonic() - start)
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, budget_s)
        try:
            proc.wait(timeout=min(PROGRESS_EVERY_S, left))
            return
        except subprocess.TimeoutExpired:
            text = log.read_text(encoding="utf-8", errors="replace")
            tried = len(re.findall(r"Result: \w+ at ", text))
            print(
                f"    {(time.monotonic() - start) / 60:4.1f} min: {tried} of up to {nlocations} "
                f"mutants tried ({partial_results(text)}); budget {budget_s / 60:.0f} min",
                flush=True,
            )


def partial_results(log: str) -> str:
    """Count the trial results mutatest logged before it was stopped.

    >>> partial_results("Result: Survived at a.py: (1, 2) Result: Detected at a.py: (1, 2)")
    'partial results: 1 detected, 1 survived'
    """
    found = re.findall(r"Result: (\w+) at ", log)
    counts = ", ".join(f"{found.count(k)} {k.lower()}" for k in sorted(set(found)))
    return f"partial results: {counts or 'none'}"


def merge(reports: list[Report]) -> Report:
    """Sum the counts and survivors of several runs (quick mode: one per changed file)."""
    c = [r.counts for r in reports]
    return Report(
        Counts(
            detected=sum(x.detected for x in c),
            survived=sum(x.survived for x in c),
            timeout=sum(x.timeout for x in c),
            errors=sum(x.errors for x in c),
            unknown=sum(x.unknown for x in c),
        ),
        [m for r in reports for m in r.survivors],
    )


def check_module(
    mod: gates.MutationModule,
    cfg: gates.MutationGates,
    copy: Path,
    outdir: Path,
    changed: list[str] | None,
    budget_s: float,
    root: Path = gates.ROOT,
) -> Outcome:
    """Mutate one module (or its changed files) and judge the score against the floor."""
    path = gates.module_path(mod.name, root)
    if path is None:
        if mod.pending:
            return Outcome(mod.name, "PENDING", mod.score, note="not written yet")
        return Outcome(mod.name, "MISSING", mod.score, note=f"no source for {mod.name}")
    rel = path.relative_to(root).as_posix()
    if changed is None:
        targets = [rel]
    else:
        targets = [f for f in changed if f == rel or f.startswith(rel + "/")]
        if not targets:
            return Outcome(mod.name, "NOTHING CHANGED", mod.score)
    missing_tests = [t for t in mod.tests if not (root / t).exists()]
    if missing_tests:
        return Outcome(mod.name, "ERROR", mod.score, note=f"no tests at {missing_tests}")
    reports = []
    deadline = time.monotonic() + budget_s
    nlocations = mod.nlocations if changed is None else min(mod.nlocations, cfg.quick_nlocations)
    try:
        for i, target in enumerate(targets):
            out = outdir / f"{mod.name}.{i}.rst"
            left = deadline - time.monotonic()
            reports.append(run_target(copy, target, list(mod.tests), nlocations, cfg, out, left))
    except (TimeoutError, RuntimeError) as exc:
        return Outcome(mod.name, "ERROR", mod.score, note=str(exc))
    report = merge(reports)
    score = report.counts.score
    if score is None:
        return Outcome(mod.name, "ERROR", mod.score, report, "no mutant was judged")
    status = "ok" if score >= mod.score else "BELOW FLOOR"
    # a quick run samples only the changed files: no reason to raise the module's floor
    raise_it = changed is None and int(score) > mod.score
    note = f"RAISE floor to {int(score)}" if raise_it else ""
    if mod.pending:
        note = "; ".join(n for n in (note, "landed: remove `pending`") if n)
    return Outcome(mod.name, status, mod.score, report, note)


def print_outcome(o: Outcome) -> None:
    """Score, floor, verdict, then every surviving mutant."""
    score = (
        "-"
        if o.report is None or o.report.counts.score is None
        else f"{o.report.counts.score:.1f}%"
    )
    counts = "" if o.report is None else f" {o.report.counts}"
    print(f"{o.module:32s} {score:>7s} floor {o.floor:.0f}%  {o.status}{counts}")
    if o.note:
        print(f"    {o.note}")
    for m in [] if o.report is None else o.report.survivors:
        print(f"    SURVIVED {m.describe()}")


def main(args: Any, cfg: gates.MutationGates, names: list[str]) -> int:
    """Run the mutatest engine on ``names``; prints trials per minute (nothing is recorded)."""
    changed = changed_files(args.base) if args.quick else None
    outdir = args.out / "mutatest"
    outdir.mkdir(parents=True, exist_ok=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="kd-mutation-") as tmp:
        copy = Path(tmp)
        copy_tree(gates.ROOT, copy)
        for number, name in enumerate(names, 1):
            mod = cfg.modules[name]
            if args.nlocations:
                mod = dataclasses.replace(mod, nlocations=args.nlocations)
            budget = (args.max_minutes or cfg.max_minutes) * 60
            print(f"[{number}/{len(names)}] mutatest on {name} ({mod.nlocations} locations)")
            start = time.monotonic()
            o = check_module(mod, cfg, copy, outdir, changed, budget)
            took = time.monotonic() - start
            print_outcome(o)
            if o.report is not None and o.report.counts.total:
                rate = 60 * o.report.counts.total / took
                print(f"    {o.report.counts.total} trials in {took:.0f} s: {rate:.1f} trials/min")
            failed += [name] if o.failed else []
    return 1 if failed else 0
