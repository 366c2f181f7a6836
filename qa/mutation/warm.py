"""Mutation trials in one warm process that forks per mutant.

The parent imports torch, pytest, the test modules and (through them) the modules under
test once, with pytest's own collection (``--collect-only``): with ``--import-mode=importlib``
pytest takes a test module that is already in ``sys.modules`` from there, so a later
``pytest.main`` in a forked child collects without importing anything.

1. **Baseline** (one forked child per module): every test of the module runs once under
   coverage.py with one dynamic context per test (the test's node id, as
   ``--cov-context=test`` names them), which gives ``line -> tests`` and each test's time.
   A module whose tests fail unmutated is an error, not a score.
2. **Trials** (one forked child per mutant): the child applies the mutant, runs only the
   tests that cover the mutant's lines (``-x``: the first failure kills it) and exits; the
   parent reads its verdict and kills the child's process group past its timeout.

How the child applies a mutant:

* in a function body (most mutants): the file's mutated source is compiled and the code
  object of that function (found by ``co_qualname`` and ``co_firstlineno``) replaces
  ``__code__`` on every live function object made from the original. Every reference
  (``from m import f``, a bound method, a decorator's closure, a pydantic validator) holds
  that same function object, so all of them run the mutant;
* at import time (a module constant, a class body, a default value; the report's
  ``static`` mutants): the project's modules and the test modules are dropped from
  ``sys.modules`` and an import hook serves the mutated source, so pytest imports the
  project afresh (torch and the other libraries stay imported). No coverage context
  covers such a line (it ran before the baseline), so they run all of the module's tests.

A test that runs the product in a subprocess sees the file on disk, never the mutant: such
tests cannot kill a mutant here, and lines they alone cover show as ``NoCoverage``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.mutation.mutants import Mutant, find, mutate

#: pytest options of every in-process run: one process, no cache, quiet.
PYTEST_ARGS = ("-q", "-n", "0", "-p", "no:cacheprovider", "--no-header", "-W", "ignore")

#: Where the project's modules live: dropped from sys.modules for a static mutant.
PROJECT_DIRS = ("packages", "tests")

#: Child exit codes (pytest's own are 0-5).
EXIT_APPLY_FAILED = 90


@dataclass(frozen=True)
class Trial:
    """The verdict on one mutant, in the mutation-testing-report-schema's words."""

    status: str  # Killed, Survived, Timeout, NoCoverage, RuntimeError, CompileError, Ignored
    tests: tuple[str, ...] = ()
    killed_by: str = ""
    reason: str = ""
    seconds: float = 0.0


@dataclass
class Baseline:
    """One module's clean run: which tests cover which line, and how long each test took."""

    lines: dict[str, dict[int, list[str]]]  # file -> line -> test node ids
    durations: dict[str, float]
    failed: list[str]
    exit_code: int
    seconds: float

    def covering(self, file: str, first: int, last: int) -> list[str]:
        """The tests that ran any line ``first..last`` of ``file``, cheapest first.

        The order is :func:`cheapest_first`'s: a trial runs with ``-x``, so a killed
        mutant costs only the tests up to the first that fails.
        """
        found: set[str] = set()
        by_line = self.lines.get(file, {})
        for line in range(first, last + 1):
            found.update(by_line.get(line, []))
        return cheapest_first([t for t in self.durations if t in found], self.durations)


def cheapest_first(tests: Sequence[str], durations: Mapping[str, float]) -> list[str]:
    """``tests`` ordered by their baseline time, each test file's tests kept together.

    Files go cheapest test first, and within a file the tests go by time (ties keep the
    order they ran in): a killed mutant's trial stops at the first failure (``-x``), and a
    file's module-scoped fixtures are still built once. A test without a time goes last.

    >>> cheapest_first(
    ...     ["a.py::slow", "a.py::fast", "b.py::mid"],
    ...     {"a.py::slow": 9.0, "a.py::fast": 0.1, "b.py::mid": 0.5},
    ... )
    ['a.py::fast', 'a.py::slow', 'b.py::mid']
    """
    inf = float("inf")
    first: dict[str, float] = {}
    for t in tests:
        file = t.split("::", 1)[0]
        first[file] = min(first.get(file, inf), durations.get(t, inf))
    return sorted(
        tests,
        key=lambda t: (first[t.split("::", 1)[0]], t.split("::", 1)[0], durations.get(t, inf)),
    )


@dataclass
class Target:
    """One source file of a critical module, its mutants and the code to swap them into."""

    path: Path  # absolute
    module: str  # dotted name the interpreter imported it as
    source: str
    mutants: list[Mutant] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, module: str) -> Target:
        """Read ``path`` and list its mutants."""
        source = path.read_text(encoding="utf-8")
        return cls(path, module, source, find(source))


def quiet_fds(log: Path) -> None:
    """Send this process's stdout and stderr (the file descriptors) to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def warm_up(tests: Sequence[str], root: Path, log: Path) -> None:
    """Import torch (one thread) and every test module once, through pytest's collection."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pytest
    import torch

    # one intra-op thread: an OpenMP pool started in the parent does not survive a fork
    torch.set_num_threads(1)
    saved = os.dup(1), os.dup(2)
    try:
        quiet_fds(log)
        code = pytest.main(["--collect-only", *PYTEST_ARGS, *tests], plugins=[])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    if code != 0:
        raise RuntimeError(f"collecting {list(tests)} failed (exit {code}); see {log}")


class _Selector:
    """pytest plugin: keep only the chosen tests; note the first failure and count tests."""

    def __init__(self, keep: set[str] | None, order: Sequence[str] = ()) -> None:
        self.keep = keep
        self.rank = {t: i for i, t in enumerate(order)}
        self.failed = ""
        self.reason = ""
        self.completed = 0

    def pytest_collection_modifyitems(self, config: Any, items: list[Any]) -> None:
        if self.keep is not None:
            items[:] = [i for i in items if i.nodeid in self.keep]
        # the given order (cheapest first); a test it does not name keeps its place after
        last = len(self.rank)
        items.sort(key=lambda i: self.rank.get(i.nodeid, last))

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call":
            self.completed += 1
        if report.failed and not self.failed:
            self.failed = report.nodeid
            crash = getattr(report.longrepr, "reprcrash", None)
            self.reason = str(getattr(crash, "message", "") or report.longrepr)[:400]


class _Contexts:
    """pytest plugin: one coverage context per test (its node id) and each test's time."""

    def __init__(self, cov: Any) -> None:
        self.cov = cov
        self.durations: dict[str, float] = {}
        self.failed: list[str] = []

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
        self.cov.switch_context(item.nodeid)
        self.durations[item.nodeid] = time.perf_counter()

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self.durations[nodeid] = time.perf_counter() - self.durations.get(nodeid, 0.0)
        self.cov.switch_context("")

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            self.failed.append(report.nodeid)


def _run_child(body: Any, timeout_s: float | None = None) -> tuple[int, bool, float]:
    """Fork; the child runs ``body()`` (its exit code) in a process group of its own.

    Returns (exit code, timed out, seconds); a child killed by a signal gives 128 + signal.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        code = 70
        try:
            os.setpgid(0, 0)
            code = int(body())
        except BaseException:  # any failure of the child becomes its exit code
            import traceback

            traceback.print_exc()
            code = 71
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return _wait(pid, start, timeout_s)


def _wait(pid: int, start: float, timeout_s: float | None) -> tuple[int, bool, float]:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            seconds = time.monotonic() - start
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status), False, seconds
            return os.WEXITSTATUS(status), False, seconds
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return -1, True, time.monotonic() - start
        time.sleep(0.01)


def _kill_group(pid: int) -> None:
    for target in (-pid, pid):  # the group (the tests' own subprocesses too), then the child
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


def baseline(targets: Sequence[Target], tests: Sequence[str], work: Path) -> Baseline:
    """Run ``tests`` once under coverage, one context per test, in a forked child."""
    out = work / "baseline.json"

    def body() -> int:
        import coverage
        import pytest

        quiet_fds(work / "baseline.log")
        cov = coverage.Coverage(
            data_file=None, include=[str(t.path) for t in targets], config_file=False
        )
        plugin = _Contexts(cov)
        cov.start()
        try:
            code = pytest.main(
                [*PYTEST_ARGS, f"--basetemp={work / 'bt-baseline'}", *tests], plugins=[plugin]
            )
        finally:
            cov.stop()
        data = cov.get_data()
        lines = {}
        for t in targets:
            by_line = data.contexts_by_lineno(str(t.path))
            lines[str(t.path)] = {n: [c for c in ctx if c] for n, ctx in by_line.items()}
        payload = {
            "lines": lines,
            "durations": plugin.durations,
            "failed": plugin.failed,
            "exit": int(code),
        }
        out.write_text(json.dumps(payload), encoding="utf-8")
        return 0

    code, _, seconds = _run_child(body)
    if code != 0 or not out.exists():
        raise RuntimeError(f"the baseline run crashed (exit {code}); see {work / 'baseline.log'}")
    raw = json.loads(out.read_text(encoding="utf-8"))
    lines = {f: {int(n): ts for n, ts in by.items()} for f, by in raw["lines"].items()}
    return Baseline(lines, raw["durations"], raw["failed"], raw["exit"], seconds)


def _code_objects(code: types.CodeType) -> dict[tuple[str, int], types.CodeType]:
    out: dict[tuple[str, int], types.CodeType] = {}
    stack = [code]
    while stack:
        c = stack.pop()
        out[(c.co_qualname, c.co_firstlineno)] = c
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return out


def live_functions(path: Path) -> dict[tuple[str, int], list[types.FunctionType]]:
    """Every function object alive in this process whose code comes from ``path``."""
    name = str(path)
    out: dict[tuple[str, int], list[types.FunctionType]] = {}
    with warnings.catch_warnings():  # isinstance on a deprecated torch alias warns
        warnings.simplefilter("ignore")
        funcs = [o for o in gc.get_objects() if isinstance(o, types.FunctionType)]
    for f in funcs:
        if f.__code__.co_filename == name:
            out.setdefault((f.__code__.co_qualname, f.__code__.co_firstlineno), []).append(f)
    return out


class _MutatedSource(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Import hook: serve ``module`` from already compiled (mutated) ``code``.

    ``InspectLoader.exec_module`` runs what :meth:`get_code` returns in the new module.
    """

    def __init__(self, module: str, path: Path, code: types.CodeType) -> None:
        self.module, self.path, self.code = module, path, code

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for the mutated module only."""
        if fullname != self.module:
            return None
        package = [str(self.path.parent)] if self.path.name == "__init__.py" else None
        return importlib.util.spec_from_file_location(
            fullname, self.path, loader=self, submodule_search_locations=package
        )

    def get_code(self, fullname: str) -> types.CodeType:
        """The mutated module's code."""
        return self.code

    def get_source(self, fullname: str) -> str:
        """The original source (tracebacks show the file on disk)."""
        return self.path.read_text(encoding="utf-8")


def drop_project_modules(root: Path) -> None:
    """Forget every imported module whose file lies in the project's packages or tests."""
    dirs = [str(root / d) + os.sep for d in PROJECT_DIRS]
    conftest = str(root / "conftest.py")
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None) or ""
        if file == conftest or any(file.startswith(d) for d in dirs):
            del sys.modules[name]


class Runner:
    """Runs the trials of one critical module in this (warm) process."""

    def __init__(
        self,
        targets: Sequence[Target],
        tests: Sequence[str],
        root: Path,
        work: Path,
        *,
        timeout_factor: float,
        min_timeout_s: float = 20.0,
    ) -> None:
        self.targets = list(targets)
        self.tests = list(tests)
        self.root = root
        self.work = work
        self.timeout_factor = timeout_factor
        self.min_timeout_s = min_timeout_s
        self.base: Baseline | None = None
        self.original: dict[Path, dict[tuple[str, int], types.CodeType]] = {}
        self.live: dict[Path, dict[tuple[str, int], list[types.FunctionType]]] = {}

    def prepare(self) -> Baseline:
        """The baseline run, then the original code objects and the live functions."""
        self.base = baseline(self.targets, self.tests, self.work)
        for t in self.targets:
            self.original[t.path] = _code_objects(compile(t.source, str(t.path), "exec"))
            self.live[t.path] = live_functions(t.path)
        # what the parent holds now lives in the permanent generation: the children's
        # collections (pytest runs gc.collect at exit) skip it and leave its pages shared
        gc.collect()
        gc.freeze()
        return self.base

    def plan(self, target: Target, mutant: Mutant) -> tuple[list[str] | None, bool]:
        """(tests to run, or None for all of the module's; whether the mutant is static)."""
        if self.base is None:
            raise RuntimeError("prepare() first")
        live = self.live[target.path].get((mutant.function, mutant.function_line))
        if mutant.static or not live:
            return None, True
        return self.base.covering(str(target.path), mutant.line, mutant.end_line), False

    def timeout(self, tests: list[str] | None) -> float:
        """``timeout_factor`` x the tests' baseline time, plus start-up; never below the floor."""
        if self.base is None:
            raise RuntimeError("prepare() first")
        chosen = (
            self.base.durations.values()
            if tests is None
            else [self.base.durations.get(t, 0.0) for t in tests]
        )
        return max(self.min_timeout_s, self.timeout_factor * (sum(chosen) + 2.0))

    def start(self, target: Target, mutant: Mutant, slot: int) -> tuple[int, list[str], float]:
        """Fork the child of one trial; returns (pid, its tests, its timeout)."""
        tests, static = self.plan(target, mutant)
        code = compile(mutate(target.source, mutant.index), str(target.path), "exec")
        result = self.work / f"trial-{slot}.json"
        result.unlink(missing_ok=True)
        chosen = list(self.tests) if tests is None else tests
        files = sorted({t.split("::", 1)[0] for t in chosen}) if tests is not None else chosen
        keep = None if tests is None else set(tests)
        # covering() ordered a function mutant's tests already; a static one runs them all
        durations = self.base.durations if self.base is not None else {}
        order = tests if tests is not None else cheapest_first(list(durations), durations)
        basetemp = self.work / f"bt-{slot}"

        def body() -> int:
            quiet_fds(self.work / f"trial-{slot}.log")
            if static:
                drop_project_modules(self.root)
                sys.meta_path.insert(0, _MutatedSource(target.module, target.path, code))
            elif not self._swap(target, code, mutant):
                return EXIT_APPLY_FAILED
            import pytest

            plugin = _Selector(keep, order)
            rc = pytest.main(
                [*PYTEST_ARGS, "-x", "-p", "no:randomly", f"--basetemp={basetemp}", *files],
                plugins=[plugin],
            )
            payload = {"failed": plugin.failed, "reason": plugin.reason, "n": plugin.completed}
            result.write_text(json.dumps(payload), encoding="utf-8")
            return int(rc)

        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            rc = 70
            try:
                os.setpgid(0, 0)
                rc = body()
            except BaseException:
                import traceback

                traceback.print_exc()
                rc = 71
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        return pid, chosen, self.timeout(tests)

    def _swap(self, target: Target, code: types.CodeType, mutant: Mutant) -> bool:
        new = _code_objects(code)
        old = self.original[target.path]
        swapped = 0
        for key, funcs in self.live[target.path].items():
            if key in new and key in old and new[key] != old[key]:
                for f in funcs:
                    f.__code__ = new[key]
                    swapped += 1
        return swapped > 0

    def verdict(self, slot: int, code: int, timed_out: bool, tests: list[str]) -> Trial:
        """Read what the child of ``slot`` left and judge the mutant."""
        result = self.work / f"trial-{slot}.json"
        info = json.loads(result.read_text(encoding="utf-8")) if result.exists() else {}
        if timed_out:
            return Trial("Timeout", tuple(tests), reason="over its time limit")
        if code == 0:
            return Trial("Survived", tuple(tests))
        if code == 1:
            return Trial("Killed", tuple(tests), info.get("failed", ""), info.get("reason", ""))
        if code == EXIT_APPLY_FAILED:
            return Trial("Ignored", tuple(tests), reason="no live function took the mutant")
        if code >= 128:
            # the mutant crashed the interpreter (a segfault in torch, say): it was noticed
            return Trial(
                "Killed", tuple(tests), reason=f"the test process died (signal {code - 128})"
            )
        log = self.work / f"trial-{slot}.log"
        return Trial("RuntimeError", tuple(tests), reason=f"pytest exit {code}; see {log}")

    def run(
        self, chosen: Iterable[tuple[Target, Mutant]], jobs: int = 1, progress: Any = None
    ) -> list[tuple[Target, Mutant, Trial]]:
        """Run the trials of ``chosen``, ``jobs`` children at a time."""
        if self.base is None:
            raise RuntimeError("prepare() first")
        todo = list(chosen)
        out: list[tuple[Target, Mutant, Trial] | None] = [None] * len(todo)
        running: dict[int, tuple[int, list[str], float, float, int]] = {}
        free = list(range(max(1, jobs)))
        nxt = 0
        while nxt < len(todo) or running:
            while free and nxt < len(todo):
                target, mutant = todo[nxt]
                tests, _ = self.plan(target, mutant)
                if tests is not None and not tests:
                    out[nxt] = (target, mutant, Trial("NoCoverage"))
                    nxt += 1
                    continue
                slot = free.pop()
                try:
                    pid, ran, limit = self.start(target, mutant, slot)
                except (SyntaxError, ValueError, TypeError) as exc:
                    out[nxt] = (target, mutant, Trial("CompileError", reason=str(exc)))
                    free.append(slot)
                    nxt += 1
                    continue
                running[pid] = (nxt, ran, limit, time.monotonic(), slot)
                nxt += 1
            if not running:
                continue
            time.sleep(0.005)
            for pid, (i, ran, limit, began, slot) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                timed_out = False
                if not done:
                    if time.monotonic() - began <= limit:
                        continue
                    _kill_group(pid)
                    os.waitpid(pid, 0)
                    timed_out, status = True, 0
                code = (
                    128 + os.WTERMSIG(status)
                    if done and os.WIFSIGNALED(status)
                    else (os.WEXITSTATUS(status) if done else -1)
                )
                trial = self.verdict(slot, code, timed_out, ran)
                trial = Trial(
                    trial.status,
                    trial.tests,
                    trial.killed_by,
                    trial.reason,
                    time.monotonic() - began,
                )
                target, mutant = todo[i]
                out[i] = (target, mutant, trial)
                del running[pid]
                free.append(slot)
                if progress is not None:
                    progress(target, mutant, trial)
        return [x for x in out if x is not None]


def source_module(path: Path) -> str:
    """The dotted name a source file under ``packages/*/src`` is imported as."""
    parts = path.with_suffix("").parts
    start = max(i for i, p in enumerate(parts) if p == "src") + 1
    names = [p for p in parts[start:] if p != "__init__"]
    return ".".join(names)


def scratch(prefix: str = "kd-mutation-") -> Path:
    """A fresh temp folder for one run's logs and pytest base temps."""
    return Path(tempfile.mkdtemp(prefix=prefix))
