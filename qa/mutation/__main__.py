"""``python -m qa.mutation``: the mutation gate of the critical modules (``qa/gates.toml``).

Runs:

* **complete** (no mode flag; the scheduled run): every mutant of every critical module;
* ``--quick --base REF`` (pull requests): the mutants on the lines changed since ``REF`` in
  each critical module, and *every* mutant of a module whose tests (its ``tests`` entry, or
  a ``conftest.py`` above them) changed, so weakening a test is caught;
* ``--shard I/N``: mutants ``I, I+N, I+2N, ...`` of the complete run (CI runs the N shards
  as parallel jobs, then ``--merge`` their reports for the verdict);
* ``--sample K``: K mutants per module drawn with the gate's seed (a local estimate, quoted
  with its 95 % Wilson interval).

Trials run in one warm process that forks per mutant (:mod:`qa.mutation.warm`); each runs
only the tests whose coverage context covers the mutant's lines. ``--engine mutatest`` runs
the former engine (:mod:`qa.mutation.legacy`, mutatest through the shim) for comparison.

Writes ``qa/reports/mutation/``: ``mutation-report.json`` (the mutation-testing-report-schema)
and ``index.html`` (each file's source with its surviving mutants). The tree stays clean
unless ``--record``: then a complete (or merged) run appends one line per module to
``qa/mutation/history.jsonl`` and keeps its report as ``qa/mutation/report.json``, which the
docs site renders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa import gates, summary
from qa.mutation import changes, history, html_report, stryker
from qa.mutation.mutants import Mutant

#: Where a recorded run keeps its report (read by the docs site).
RECORDED = Path(__file__).resolve().parent / "report.json"
#: Colours of the report: score at or above ``high`` is good, below ``low`` bad.
THRESHOLDS = (80, 60)


@dataclass
class Outcome:
    """The verdict on one module."""

    module: str
    status: str  # ok, BELOW FLOOR, PENDING, MISSING, ERROR, NOTHING CHANGED, SHARD, INCOMPLETE
    floor: float
    counts: stryker.Counts | None = None
    total: int = 0  # every mutant of the module
    selected: int = 0  # the mutants this run tried
    note: str = ""
    survivors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True when this module fails the gate."""
        return self.status in ("BELOW FLOOR", "MISSING", "ERROR", "INCOMPLETE")

    @property
    def sampled(self) -> bool:
        """True when the run tried only part of the module's mutants."""
        return 0 < self.selected < self.total

    def score_text(self) -> str:
        """``93.1%``, with ``[lo-hi]`` (95 % Wilson) when the run was a sample."""
        if self.counts is None or self.counts.score is None:
            return "-"
        text = f"{self.counts.score:.1f}%"
        if self.sampled:
            lo, hi = stryker.wilson(self.counts.detected, self.counts.judged)
            text += f" [95% CI {lo:.0f}-{hi:.0f}]"
        return text


def module_files(path: Path) -> list[Path]:
    """The source files of a critical module (a file, or every ``.py`` below a folder)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def select(
    all_mutants: list[tuple[Any, Mutant]],
    *,
    root: Path,
    mode: str,
    changed: dict[str, set[int]] | None = None,
    sample: int = 0,
    shard: tuple[int, int] = (1, 1),
    seed: int = 0,
) -> list[tuple[Any, Mutant]]:
    """The mutants a run of ``mode`` tries (``all_mutants`` holds (target, mutant) pairs)."""
    if mode == "quick":
        lines = changed or {}
        out = []
        for t, m in all_mutants:
            rel = t.path.relative_to(root).as_posix()
            if rel in lines and changes.touches(lines[rel], m.line, m.end_line):
                out.append((t, m))
        return out
    if mode == "sample":
        # a seeded draw: the same code and seed give the same sample on every machine
        def rank(k: int) -> bytes:
            return hashlib.sha256(f"{seed}:{k}".encode()).digest()

        picked = sorted(sorted(range(len(all_mutants)), key=rank)[:sample])
        return [all_mutants[i] for i in picked]
    if mode == "shard":
        i, n = shard
        return [x for k, x in enumerate(all_mutants) if k % n == i - 1]
    return list(all_mutants)


def mutant_id(rel: str, m: Mutant) -> str:
    """A stable id: file, place, mutator and replacement."""
    return f"{rel}@{m.line}:{m.column}:{m.mutator}:{m.replacement}#{m.index}"


def judge(o: Outcome, mod: gates.MutationModule, mode: str) -> Outcome:
    """Set status and note from the counts, the floor and the mode."""
    score = None if o.counts is None else o.counts.score
    if score is None:
        o.status, o.note = ("ERROR", "no mutant was judged") if o.selected else ("ok", "")
        return o
    if mode == "shard":
        o.status = "SHARD"
        return o
    if mode == "sample":
        hi = stryker.wilson(o.counts.detected, o.counts.judged)[1] if o.counts else 100.0
        o.status = "BELOW FLOOR" if hi < mod.score else "ok"
        o.note = "a sample: the floor fails only when the whole interval is below it"
        return o
    o.status = "ok" if score >= mod.score else "BELOW FLOOR"
    if mode == "complete" and int(score) > mod.score:
        o.note = f"RAISE floor to {int(score)}"
    if mod.pending:
        o.note = "; ".join(n for n in (o.note, "landed: remove `pending`") if n)
    return o


def survivor_lines(report_files: dict[str, Any], rels: list[str]) -> list[str]:
    """``SURVIVED path:line:col  mutator -> replacement  | code`` for each survivor."""
    out = []
    for rel in rels:
        f = report_files.get(rel)
        if not f:
            continue
        src = f["source"].splitlines()
        for m in f["mutants"]:
            if m["status"] in ("Survived", "NoCoverage"):
                s = m["location"]["start"]
                code = src[s["line"] - 1].strip() if s["line"] <= len(src) else ""
                word = "SURVIVED" if m["status"] == "Survived" else "NO COVERAGE"
                out.append(
                    f"{word} {rel}:{s['line']}:{s['column']}  {m['mutatorName']} -> "
                    f"{m.get('replacement', '')}  | {code[:70]}"
                )
    return out


def print_outcome(o: Outcome) -> None:
    """Score, floor, verdict, counts, then every surviving mutant."""
    counts = "" if o.counts is None else f" {o.counts.as_dict()}"
    tried = f" {o.selected}/{o.total} mutants" if o.total else ""
    took = f" in {o.seconds / 60:.1f} min" if o.seconds else ""
    print(
        f"{o.module:32s} {o.score_text():>7s} floor {o.floor:.0f}%  {o.status}{tried}{took}{counts}"
    )
    if o.note:
        print(f"    {o.note}")
    for line in o.survivors:
        print(f"    {line}")


class Progress:
    """A line every ``every_s`` seconds: how many trials of the module ran, and how fast."""

    def __init__(self, module: str, total: int, every_s: float = 60.0) -> None:
        self.module, self.total, self.every_s = module, total, every_s
        self.start = self.last = time.monotonic()
        self.seen: dict[str, int] = {}

    def __call__(self, target: Any, mutant: Mutant, trial: Any) -> None:
        """Count one finished trial; print when the last line is old enough."""
        self.seen[trial.status] = self.seen.get(trial.status, 0) + 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            done = sum(self.seen.values())
            rate = 60 * done / max(now - self.start, 1e-9)
            print(
                f"    {(now - self.start) / 60:4.1f} min: {done} of {self.total} trials "
                f"{self.seen} ({rate:.0f}/min)",
                flush=True,
            )


def run_module(
    mod: gates.MutationModule,
    cfg: gates.MutationGates,
    args: argparse.Namespace,
    root: Path,
    report: dict[str, Any],
    changed: dict[str, set[int]] | None,
) -> Outcome:
    """Mutate one module with the warm engine; add its files to ``report``."""
    from qa.mutation import warm

    path = gates.module_path(mod.name, root)
    if path is None:
        if mod.pending:
            return Outcome(mod.name, "PENDING", mod.score, note="not written yet")
        return Outcome(mod.name, "MISSING", mod.score, note=f"no source for {mod.name}")
    targets = [warm.Target.load(f, warm.source_module(f)) for f in module_files(path)]
    everything = [(t, m) for t in targets for m in t.mutants]
    mode, why = args.mode, ""
    if mode == "quick":
        touched = changes.tests_changed(changed or {}, mod.tests)
        if touched:
            mode, why = (
                "complete-for-tests",
                f"its tests changed ({', '.join(touched)}): every mutant",
            )
    chosen = select(
        everything,
        root=root,
        mode="complete" if mode == "complete-for-tests" else mode,
        changed=changed,
        sample=args.sample or 0,
        shard=args.shard,
        seed=cfg.seed,
    )
    o = Outcome(mod.name, "ok", mod.score, total=len(everything), selected=len(chosen), note=why)
    report["config"]["modules"][mod.name] = {
        "total": len(everything),
        "selected": len(chosen),
        "files": [t.path.relative_to(root).as_posix() for t in targets],
        "floor": mod.score,
    }
    if not chosen:
        o.status = "NOTHING CHANGED" if mode == "quick" else "ok"
        return o
    missing = [t for t in mod.tests if not (root / t).exists()]
    if missing:
        return Outcome(mod.name, "ERROR", mod.score, note=f"no tests at {missing}")
    work = Path(tempfile.mkdtemp(prefix=f"kd-mutation-{mod.name}-"))
    try:
        o = trials(o, mod, cfg, args, root, report, targets, chosen, work, mode)
    finally:
        if o.status == "ERROR":
            o.note += f" (logs in {work})"
        else:
            shutil.rmtree(work, ignore_errors=True)
    return o


def trials(
    o: Outcome,
    mod: gates.MutationModule,
    cfg: gates.MutationGates,
    args: argparse.Namespace,
    root: Path,
    report: dict[str, Any],
    targets: list[Any],
    chosen: list[tuple[Any, Mutant]],
    work: Path,
    mode: str,
) -> Outcome:
    """The baseline and the trials of one module, in ``work``; fills ``report``."""
    from qa.mutation import warm

    start = time.monotonic()
    try:
        warm.warm_up(mod.tests, root, work / "collect.log")
        runner = warm.Runner(targets, mod.tests, root, work, timeout_factor=cfg.timeout_factor)
        base = runner.prepare()
    except RuntimeError as exc:
        return Outcome(mod.name, "ERROR", mod.score, note=str(exc))
    if base.exit_code != 0:
        return Outcome(
            mod.name, "ERROR", mod.score, note=f"its tests fail unmutated: {base.failed[:5]}"
        )
    print(
        f"    baseline: {len(base.durations)} tests in {base.seconds:.1f} s; "
        f"{len(chosen)} of {o.total} mutants to try",
        flush=True,
    )
    results = runner.run(chosen, jobs=args.jobs, progress=Progress(mod.name, len(chosen)))
    o.seconds = time.monotonic() - start
    tried = {(id(t), m.index): trial for t, m, trial in results}
    statuses = []
    for t in targets:
        rel = t.path.relative_to(root).as_posix()
        entries = []
        for m in t.mutants:
            trial = tried.get((id(t), m.index))
            if trial is None and args.mode != "shard":
                continue
            status = "Pending" if trial is None else trial.status
            if trial is not None:
                statuses.append(status)
            entries.append(
                stryker.mutant_entry(
                    mutant_id(rel, m),
                    m.mutator,
                    m.replacement,
                    (m.line, m.column, m.end_line, m.end_column),
                    status,
                    coveredBy=list(trial.tests) if trial and len(trial.tests) < 50 else None,
                    killedBy=[trial.killed_by] if trial and trial.killed_by else None,
                    statusReason=trial.reason if trial else None,
                    duration=round(trial.seconds * 1000) if trial else None,
                    static=True if m.static else None,
                )
            )
        report["files"][rel] = {"language": "python", "source": t.source, "mutants": entries}
    o.counts = stryker.Counts.of(statuses)
    report["config"]["modules"][mod.name]["seconds"] = round(o.seconds, 1)
    o = judge(o, mod, "complete" if mode == "complete-for-tests" else mode)
    o.survivors = survivor_lines(report["files"], report["config"]["modules"][mod.name]["files"])
    return o


def from_report(
    report: dict[str, Any], cfg: gates.MutationGates, names: list[str]
) -> list[Outcome]:
    """The verdicts of a merged report (the shards of one complete run)."""
    out = []
    for name in names:
        mod = cfg.modules[name]
        info = report.get("config", {}).get("modules", {}).get(name)
        if info is None:
            out.append(Outcome(name, "ERROR", mod.score, note="not in the merged reports"))
            continue
        files = info["files"]
        counts = stryker.module_counts(report, files)
        pending = sum(
            1
            for rel in files
            for m in report["files"].get(rel, {}).get("mutants", [])
            if m["status"] == "Pending"
        )
        o = Outcome(name, "ok", mod.score, counts, info["total"], info["total"] - pending)
        o.seconds = float(info.get("seconds", 0.0))
        o = judge(o, mod, "complete")
        if pending:
            o.status, o.note = "INCOMPLETE", f"{pending} mutants were tried by no shard"
        o.survivors = survivor_lines(report["files"], files)
        out.append(o)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4).

    >>> parse_shard("2/4")
    (2, 4)
    """
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard wants I/N, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard {text}: I must be in 1..N")
    return i, n


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m qa.mutation", description=__doc__)
    p.add_argument("--module", action="append", help="only this module (repeatable)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="changed lines since --base")
    mode.add_argument("--shard", type=parse_shard, help="I/N: one of N parts of the complete run")
    mode.add_argument("--sample", type=int, help="K random mutants per module (an estimate)")
    mode.add_argument("--merge", nargs="+", type=Path, help="judge the merged shard reports")
    p.add_argument("--base", default="origin/main", help="git ref for --quick")
    p.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help="trials at a time (default: one per usable CPU, at most 4)",
    )
    p.add_argument("--record", action="store_true", help="append history, keep the report")
    p.add_argument("--out", type=Path, default=gates.REPORTS / "mutation", help="reports here")
    p.add_argument("--engine", choices=("warm", "mutatest"), default="warm")
    p.add_argument("--nlocations", type=int, help="mutatest engine: locations to sample")
    p.add_argument("--max-minutes", type=float, help="mutatest engine: per-module budget")
    p.add_argument("--no-history", action="store_true", help=argparse.SUPPRESS)  # the default
    p.add_argument("--root", type=Path, default=gates.ROOT, help=argparse.SUPPRESS)
    p.add_argument("--gates", type=Path, default=gates.GATES, help=argparse.SUPPRESS)
    return p


def main(argv: list[str]) -> int:
    """Run the gate; 0 when every module is at or above its floor."""
    args = parser().parse_args(argv)
    root = args.root.resolve()
    cfg = gates.mutation(gates.read(args.gates))
    unknown = set(args.module or []) - set(cfg.modules)
    if unknown:
        parser().error(f"not in [mutation.modules]: {', '.join(sorted(unknown))}")
    names = [n for n in cfg.modules if not args.module or n in args.module]
    if args.engine == "mutatest":
        from qa.mutation import legacy

        return legacy.main(args, cfg, names)
    args.mode = (
        "quick"
        if args.quick
        else "shard"
        if args.shard
        else "sample"
        if args.sample
        else "complete"
    )
    args.shard = args.shard or (1, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    if args.merge:
        reports = [json.loads(p.read_text(encoding="utf-8")) for p in args.merge]
        report = stryker.merge(reports)
        outcomes = from_report(report, cfg, names)
        args.mode = "complete"
    else:
        os.chdir(root)
        for src in sorted((root / "packages").glob("*/src"), reverse=True):
            sys.path.insert(0, str(src))
        changed = (
            changes.changed_lines(args.base, root, ("packages", "conftest.py"))
            if args.quick
            else None
        )
        report = stryker.new_report(
            *THRESHOLDS,
            {
                "mode": args.mode,
                "shard": "/".join(map(str, args.shard)),
                "base": args.base if args.quick else None,
                "seed": cfg.seed,
                "jobs": args.jobs,
                "modules": {},
                "sha": history.git_sha(root),
            },
        )
        outcomes = []
        for number, name in enumerate(names, 1):
            print(f"[{number}/{len(names)}] mutating {name} ({args.mode})", flush=True)
            o = run_module(cfg.modules[name], cfg, args, root, report, changed)
            print_outcome(o)
            outcomes.append(o)
    seconds = time.monotonic() - started
    load_after = os.getloadavg()[0]
    if args.merge:  # the shards' own minutes and load, not the merge's
        seconds = float(report["config"].get("seconds", seconds))
        load_before, load_after = report["config"].get("load", [load_before, load_after])
    report["config"]["seconds"] = round(seconds, 1)
    report["config"]["load"] = [round(load_before, 2), round(load_after, 2)]
    problems = stryker.problems(report)
    if problems:
        raise SystemExit(f"qa.mutation: the report breaks the schema: {problems[:5]}")
    suffix = f"-shard{args.shard[0]}of{args.shard[1]}" if args.mode == "shard" else ""
    json_out = args.out / f"mutation-report{suffix}.json"
    summary.write_text(json_out, json.dumps(report, indent=1) + "\n")
    page = args.out / f"index{suffix}.html"
    summary.write_text(page, html_report.page(report, title="Mutation report"))
    print(f"report: {json_out} (schema 2), {page}")
    if args.record and args.mode == "complete":
        record(report, outcomes, cfg, root, (load_before, load_after), args.jobs)
    elif args.record:
        print("--record: only a complete or merged run is recorded; nothing written")
    failed = [o.module for o in outcomes if o.failed]
    data = {
        o.module: {
            "status": o.status,
            "floor": o.floor,
            "note": o.note,
            "score": None if o.counts is None else o.counts.score,
            "counts": None if o.counts is None else o.counts.as_dict(),
            "selected": o.selected,
            "total": o.total,
        }
        for o in outcomes
    }
    summary.write_json(args.out / "mutation.json", data)
    scored = [o for o in outcomes if o.counts is not None and o.counts.score is not None]
    figure = ", ".join(f"{o.module} {o.score_text()}" for o in scored)
    summary.write(
        summary.Summary("mutation", figure or "nothing mutated", ">= per-module floor", not failed)
    )
    print(f"{seconds / 60:.1f} min; load average {load_before:.2f} -> {load_after:.2f}")
    if failed:
        print(f"qa.mutation: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def default_jobs() -> int:
    """One trial per CPU this process may run on, at most 4.

    Each trial is one forked process with one intra-op thread, so the trials of a 2-core
    machine keep both cores busy (``--jobs 1`` ran at about 0.8 of the trials per minute of
    ``--jobs 2`` on ``kd_convert.validate``); past 4 the baseline and memory dominate.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity call
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def record(
    report: dict[str, Any],
    outcomes: list[Outcome],
    cfg: gates.MutationGates,
    root: Path,
    load: tuple[float, float],
    jobs: int,
) -> None:
    """Append each scored module to the history; fold the report into the recorded one.

    The recorded report keeps the other modules' files from their last recorded run, so
    modules can be recorded one at a time.
    """
    sha = history.git_sha(root)
    for o in outcomes:
        if o.counts is None or o.counts.score is None:
            continue
        meta = {
            "engine": "qa.mutation.warm",
            "python": platform.python_version(),
            "sha": sha,
            "mode": "complete",
            "nlocations": "all",
            "mutants": o.total,
            "seconds": round(o.seconds, 1),
            "jobs": jobs,
            "load": [round(x, 2) for x in load],
            "tests": list(cfg.modules[o.module].tests),
        }
        result = {"score": o.counts.score, "counts": o.counts.as_dict(), "total": o.counts.total}
        history.append(history.entry(o.module, result, meta))
    kept = json.loads(RECORDED.read_text(encoding="utf-8")) if RECORDED.exists() else None
    if kept is not None:
        mine = report["config"]["modules"]
        dropped = {
            f for name in mine for f in kept["config"]["modules"].get(name, {}).get("files", [])
        }
        files = {k: v for k, v in kept["files"].items() if k not in dropped}
        report = {
            **report,
            "files": {**files, **report["files"]},
            "config": {
                **report["config"],
                "modules": {**kept["config"]["modules"], **mine},
            },
        }
    summary.write_text(RECORDED, json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"recorded: {history.HISTORY}, {RECORDED}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
