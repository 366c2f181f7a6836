"""Every task a person or CI runs is a nox session here; `nox -l` lists them.

One job per session. `ci`, the README's test command, runs nothing itself: it requires
lint, workflows, typecheck, security, docs and tests, and nox runs each of them once. The sessions
that run the packages' code share one virtualenv, `.nox/dev`, which the `dev` session
builds and they require (so `nox -s ci` installs torch once); lint, security, bench and
build have small virtualenvs of their own. What a session installs comes from the
dependency groups of pyproject.toml, always with `-c ci/constraints.txt` (torch==2.13.0
and the rest of the dev/CI set). No session downloads from a model hub: HF_HUB_OFFLINE=1
is set for all of them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = str(ROOT / "ci" / "constraints.txt")
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PACKAGES = ("kd-train", "kd-eval", "kd-convert")
SOURCES = [f"packages/{p}/src" for p in PACKAGES]
#: The three packages, editable, with the extras their tests use.
EDITABLE = [
    *("-e", "packages/kd-train[postgres,testing]"),
    *("-e", "packages/kd-eval[test]"),
    *("-e", "packages/kd-convert[coreml]"),
]
BIN = "Scripts" if sys.platform == "win32" else "bin"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]


def install(session: nox.Session, *groups: str, packages: bool = False) -> None:
    """pip install dependency groups of pyproject.toml (and the packages), with the pins."""
    session.env.update(OFFLINE_ENV)
    requirements = nox.project.dependency_groups(PYPROJECT, *groups)
    what = " + ".join([*(["the three packages"] if packages else []), *groups])
    session.log(f"installing {what} into {session.virtualenv.location} (pip skips what is there)")
    session.install("-c", CONSTRAINTS, *(EDITABLE if packages else ()), *requirements)


def in_dev(session: nox.Session) -> Callable[..., Any]:
    """Point ``session`` at the shared `.nox/dev` virtualenv; return a runner of its programs.

    For the sessions that declare ``venv_backend="none", requires=["dev"]``. Their
    subprocesses find the virtualenv first on PATH too.
    """
    venv = session.env_dir.parent / "dev"
    if not venv.is_dir():
        session.error(f"{venv} is missing: `nox -s dev` builds it (the sessions require it)")
    path = os.pathsep.join([str(venv / BIN), os.environ.get("PATH", "")])
    session.env.update(OFFLINE_ENV, VIRTUAL_ENV=str(venv), PATH=path)

    def run(program: str, *args: str, **kwargs: Any) -> Any:
        return session.run(str(venv / BIN / program), *args, **kwargs)

    return run


#: The gates this nox invocation runs, in order (the noxfile is loaded once per invocation).
GATES_RUN: list[str] = []


def queue_verdict(session: nox.Session, name: str) -> None:
    """Note that gate ``name`` runs now and queue `summary`, which runs once, after the last.

    So `nox -s coverage mutation security` ends with one line per gate and one verdict.
    """
    GATES_RUN.append(name)
    session.notify("summary")


def gate(run: Callable[..., Any], name: str, *command: str) -> None:
    """Run a QA gate (``python -m COMMAND``) after deleting its last summary row.

    A gate that dies before it writes qa/reports/gate-NAME.json again then shows as missing
    in `nox -s qa`'s table, never with an old result.
    """
    (ROOT / "qa" / "reports" / f"gate-{name}.json").unlink(missing_ok=True)
    run("python", "-m", *command)


def tool_venv(
    session: nox.Session, run: Callable[..., Any], name: str, constraints: str, package: str
) -> Path:
    """A virtualenv of its own for a tool whose pins clash with ci/constraints.txt.

    Built once from the Python that ``run`` finds (mutatest's bytecode must match the tests'
    Python) under .nox/_tools/, then reused; returns its bin folder.
    """
    version = run("python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])", silent=True)
    venv = ROOT / ".nox" / "_tools" / f"{name}-py{str(version).strip()}"
    if not (venv / BIN / "python").exists():
        run("python", "-m", "venv", str(venv))
    python, pins = str(venv / BIN / "python"), str(ROOT / "ci" / constraints)
    session.run(python, "-m", "pip", "install", "-q", "-c", pins, package, external=True)
    return venv / BIN


def use_semgrep(session: nox.Session, run: Callable[..., Any]) -> None:
    """semgrep in its own virtualenv (ci/constraints-semgrep.txt), exported as $KD_SEMGREP.

    The security gate runs it, and so do the gate's own tests (qa/tests plant findings).
    """
    semgrep = tool_venv(session, run, "semgrep", "constraints-semgrep.txt", "semgrep")
    session.env["KD_SEMGREP"] = str(semgrep / "semgrep")


@nox.session(default=False)
def dev(session: nox.Session) -> None:
    """The shared virtualenv .nox/dev: the packages (editable) and the `dev` group."""
    install(session, "dev", packages=True)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint + format check."""
    install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def workflows(session: nox.Session) -> None:
    """The GitHub workflows: actionlint, zizmor (offline), then qa.workflows' own check.

    qa.workflows fails a gating job that can pass without working (continue-on-error,
    `|| true`, an `if:` that never holds) and a `matrix.X` or `needs:` naming nothing.
    """
    install(session, "workflows")
    files = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    session.run("actionlint", *files)
    session.run("zizmor", "--offline", "--no-progress", str(ROOT / ".github" / "workflows"))
    session.run("python", "-m", "qa.workflows", str(ROOT / ".github" / "workflows"))


@nox.session(venv_backend="none", requires=["dev"])
def typecheck(session: nox.Session) -> None:
    """mypy (strict) over the three packages and qa."""
    session.log("mypy --strict over the three packages and qa (about a minute when cold)")
    in_dev(session)("mypy", *SOURCES, "qa")


@nox.session(venv_backend="none", requires=["dev"])
def tests(session: nox.Session) -> None:
    """Every fast test (not `slow`), in parallel, under coverage; then the coverage floors.

    One pytest run (unit, doctests, integration, QA tools) measures line + branch coverage
    (pytest-cov: xdist workers and subprocesses combined), and `python -m qa.coverage report`
    checks it against the floors of qa/gates.toml, so `nox -s ci` runs the suite once. With
    arguments after `--` (a partial run) no coverage is measured and no floor is checked.
    """
    run = in_dev(session)
    use_semgrep(session, run)
    cov = [] if session.posargs else ["--cov", "--cov-report="]
    run(
        "pytest",
        *[f"packages/{p}/tests" for p in PACKAGES],
        *SOURCES,
        "--doctest-modules",
        "qa/tests",
        "tests",
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
        *cov,
        *session.posargs,
        env={"KD_CI": os.environ.get("CI", "")},
    )
    if session.posargs:
        session.log("coverage floors not checked: pytest arguments given (a partial run)")
    else:
        run("python", "-m", "qa.coverage", "report")


@nox.session(venv_backend="none", requires=["dev"], default=False)
def integration(session: nox.Session) -> None:
    """Cross-package tests with real processes (slow ones too): databases, HTTP, torchrun."""
    run = in_dev(session)
    run("pytest", "tests/integration", "-m", "integration and not e2e", *session.posargs)


@nox.session(venv_backend="none", requires=["dev"], default=False)
def e2e(session: nox.Session) -> None:
    """End-to-end runs of whole pipelines through the command lines (slow)."""
    in_dev(session)("pytest", "tests/e2e", "-m", "e2e", *session.posargs)


@nox.session(venv_backend="none", requires=["dev"], default=False)
def coverage(session: nox.Session) -> None:
    """Gate: line + branch coverage of all tests against the floors in qa/gates.toml.

    Reports in qa/reports/. `nox -s coverage -- --base origin/main` adds diff coverage and
    the floor ratchet.
    """
    queue_verdict(session, "coverage")
    gate(in_dev(session), "coverage", "qa.coverage", "run", *session.posargs)


@nox.session(venv_backend="none", requires=["dev"], default=False)
def mutation(session: nox.Session) -> None:
    """Gate: mutation testing of the critical modules (qa/mutation: warm process, fork per mutant).

    `nox -s mutation` is the complete (scheduled) run: every mutant of every critical module.
    `-- --quick --base origin/main` (pull requests): the changed lines, and every mutant of a
    module whose tests changed. `-- --shard I/N`, then `-- --merge R1 R2 ...`: the complete
    run split across CI jobs. `-- --record` keeps a complete run's scores and report.
    `-- --engine mutatest`: the former engine (mutatest through qa/mutation's shim).
    """
    queue_verdict(session, "mutation")
    run = in_dev(session)
    if "--engine" in session.posargs:
        mutatest = tool_venv(session, run, "mutatest", "constraints-mutatest.txt", "mutatest")
        session.env["KD_MUTATEST_PYTHON"] = str(mutatest / "python")
    # the engine first, on a toy repository: weak tests let mutants live, weakened tests fail
    toy = ["qa/tests/test_mutation_warm.py", "qa/tests/test_mutation_gate.py"]
    run("pytest", *toy, "-m", "slow", "-n", "0", "-q")
    gate(run, "mutation", "qa.mutation", *session.posargs)


@nox.session
def security(session: nox.Session) -> None:
    """Gate: bandit + semgrep (rules in qa/security/semgrep) against the accepted findings."""
    queue_verdict(session, "security")
    install(session, "security")
    use_semgrep(session, session.run)
    gate(session.run, "security", "qa.security", "run")


@nox.session(venv_backend="none", requires=["dev"])
def docs(session: nox.Session) -> None:
    """The Sphinx site built with -W -n into docs/_build, every doctest of it, screenshots.

    The screenshot check needs a Chromium on PATH; without one it is skipped with a line
    saying so (on GitHub Actions, whose workflows install Chromium, a missing one fails).
    """
    session.log("Sphinx: the html site, then every doctest (a few minutes)")
    in_dev(session)("python", "-m", "qa.docs", "build")
    session.log(f"site: {ROOT / 'docs' / '_build' / 'html' / 'index.html'}")


@nox.session(name="docs-gate", venv_backend="none", requires=["dev"], default=False)
def docs_gate(session: nox.Session) -> None:
    """Gate: the site (-W -n, doctests), the README's commands, pages rendered by Chromium."""
    queue_verdict(session, "docs")
    gate(in_dev(session), "docs", "qa.docs", "run")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: each path against a reference of the same run, ratios vs baselines (qa/perf).

    First qa/tests/test_perf_gates.py plants a 2x slowdown in each gated path and expects
    the quick bench to fail; then the benchmarks. Figures go to qa/reports/perf/ (ignored);
    `nox -s bench -- --record` keeps them in qa/perf/results/ and docs/_static/perf/.
    """
    install(session, "test", "bench", packages=True)
    session.run(
        *("pytest", "qa/tests/test_perf_gates.py", "-m", "slow", "-n", "0", "-q"),
        *("-p", "no:cacheprovider"),
    )
    session.run("python", "-m", "qa.perf", "bench", *session.posargs)


@nox.session(venv_backend="none", requires=["dev"], default=False)
def load(session: nox.Session) -> None:
    """Load and fault scenarios on loopback, bounded in time and count (tests/load)."""
    in_dev(session)("python", "-m", "tests.load.runner", *session.posargs)


@nox.session(venv_backend="none", requires=["dev"], default=False)
def showcase(session: nox.Session) -> None:
    """Does distillation help? KD arms against CE-only on SmolLM2, held out (about 35 min).

    Five KD losses and CE-only, at equal steps, data and seeds, each trained by
    `kd-train distill`; a table with bootstrap intervals at the end. `-- --steps N --seeds N`
    for a shorter run; `-- --record` keeps qa/perf/results/showcase.json and the charts in
    docs/_static/perf/ (else qa/reports/perf/).
    """
    in_dev(session)("python", "packages/kd-eval/benchmarks/showcase.py", *session.posargs)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build wheels + sdists of the three packages, check them, install each in a clean venv."""
    install(session, "build")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for package in PACKAGES:
        session.run("python", "-m", "build", "--outdir", str(dist), f"packages/{package}")
    session.run("twine", "check", "--strict", *[str(p) for p in sorted(dist.iterdir())])
    session.run("check-wheel-contents", *[str(p) for p in sorted(dist.glob("*.whl"))])
    for package in PACKAGES:
        module = package.replace("-", "_")
        with tempfile.TemporaryDirectory() as tmp:
            session.run("python", "-m", "virtualenv", "-q", tmp)
            py = str(Path(tmp) / BIN / "python")
            session.run(
                py,
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                CONSTRAINTS,
                "--find-links",
                str(dist),
                package,
                external=True,
            )
            session.run(
                py,
                "-c",
                f"import {module}; print('{package}', {module}.__version__)",
                external=True,
            )
            session.run(py, "-m", f"{module}.cli", "--version", external=True)


@nox.session(venv_backend="none", requires=["dev"], default=False)
def pipeline(session: nox.Session) -> None:
    """The main job: distil the toy students, evaluate them, export one; a closing table.

    Every stage is a real command line and a failing one fails the session:
    `python -m kd_train.pipelines all` (toy and 8-ball students, held-out splits), then
    `kd-eval fidelity` (toy student against its teacher, untrained and distilled),
    `kd-eval drafter` (the same toy students as their teacher's speculative drafter),
    `kd-eval classify` (8-ball student on its held-out split, untrained and distilled),
    `kd-eval report` (JSON + HTML), `kd-convert export` (onnx, torchscript) and `verify`.
    tests/e2e/test_pipeline.py runs the same stages.
    """
    import json  # only this session reads results back

    def read(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text())

    run = in_dev(session)
    out = ROOT / "runs" / "pipeline"
    ev, ex, quiet = out / "eval", out / "export", "--no-progress"
    # a fresh run each time: the trainer refuses an output_dir that already holds checkpoints
    shutil.rmtree(out, ignore_errors=True)
    run("python", "-m", "kd_train.pipelines", "all", "--out", str(out), *session.posargs)
    toy, ball = read(out / "summary.json")["toy"], read(out / "summary.json")["8-ball"]
    init = {name: str(out / name / "student-init") for name in ("toy", "8-ball")}
    for when, student in (("before", init["toy"]), ("after", toy["student_dir"])):
        run(
            *("kd-eval", "fidelity", "--teacher", toy["teacher_dir"], "--student", student),
            *("--data", str(out / "toy" / "data" / "heldout.jsonl"), quiet),
            *("--out", str(ev / f"toy-fidelity-{when}.json"), "--name", f"toy-{when}"),
        )
        run(
            *("kd-eval", "drafter", "--teacher", toy["teacher_dir"], "--student", student),
            *("--data", str(out / "toy" / "data" / "heldout.jsonl"), "--max-new-tokens", "48"),
            *("--out", str(ev / f"toy-drafter-{when}.json"), "--name", f"toy-{when}", quiet),
        )
    for when, student in (("before", init["8-ball"]), ("after", ball["student_dir"])):
        run(
            *("kd-eval", "classify", student, "--labels", "8ball"),
            *("--data", str(out / "8-ball" / "data" / "heldout.jsonl"), quiet),
            *("--out", str(ev / f"8-ball-classify-{when}.json"), "--name", f"8-ball-{when}"),
        )
    # the report pairs each evaluation's after run with its before run (every figure, both)
    evals = ("toy-fidelity", "toy-drafter", "8-ball-classify")
    after, before = ([str(ev / f"{e}-{when}.json") for e in evals] for when in ("after", "before"))
    report = ev / "report"
    run(
        *("kd-eval", "report", *after, "--before", *before),
        *("--out-dir", str(report), "--name", "pipeline"),
    )
    session.log(f"report: {report / 'report.html'} (each figure before and after)")
    for fmt in ("onnx", "torchscript"):
        run("kd-convert", "export", "--format", fmt, toy["student_dir"], str(ex / fmt), quiet)
        run("kd-convert", "verify", str(ex / fmt))

    kd = "KD loss {student_kd_before:.4f} -> {student_kd_after:.4f} (first -> last step)"
    fid = [
        read(ev / f"toy-fidelity-{w}.json")["fidelity"]["aggregate"] for w in ("before", "after")
    ]
    kl, top1 = ([f[key]["value"] for f in fid] for key in ("forward_kl", "top1_agreement"))
    cls = [read(ev / f"8-ball-classify-{w}.json")["classification"] for w in ("before", "after")]
    draft = [
        read(ev / f"toy-drafter-{w}.json")["drafter"]["aggregate"] for w in ("before", "after")
    ]
    acc = ["{value:.3f} [{low:.3f}, {high:.3f}]".format(**d["acceptance_rate"]) for d in draft]
    rows = [
        ("distil toy", toy["student_dir"], kd.format(**toy)),
        ("distil 8-ball", ball["student_dir"], kd.format(**ball)),
        (
            "fidelity toy",
            str(ev / "toy-fidelity-after.json"),
            f"KL(teacher||student) {kl[0]:.4f} -> {kl[1]:.4f} nats, "
            f"top-1 agreement {top1[0]:.3f} -> {top1[1]:.3f}",
        ),
        (
            "classify 8-ball",
            str(ev / "8-ball-classify-after.json"),
            f"accuracy {cls[0]['accuracy']:.3f} -> {cls[1]['accuracy']:.3f} "
            f"(chance {cls[1]['chance_accuracy']:.3f}, {cls[1]['n']} held out)",
        ),
        (
            "drafter toy",
            str(ev / "toy-drafter-after.json"),
            f"acceptance {acc[0]} -> {acc[1]}, speedup "
            f"{draft[0]['speedup']['value']:.2f}x -> {draft[1]['speedup']['value']:.2f}x",
        ),
        ("report", str(ev / "report" / "report.html"), "report.json + report.html"),
    ]
    for fmt in ("onnx", "torchscript"):
        parity = read(ex / fmt / "parity.json")
        worst_abs = max(case["max_abs"] for case in parity["results"])
        worst_cos = min(case["cosine"] for case in parity["results"])
        figure = (
            f"parity {parity['status']}: max|d| {worst_abs:.2g} "
            f"(<= {parity['threshold']['max_abs']:g}), cosine {worst_cos:.6f}; verified"
        )
        rows.append((f"export {fmt}", str(ex / fmt), figure))
    rows = [(stage, os.path.relpath(path, ROOT), figure) for stage, path, figure in rows]
    width = [max(len(row[i]) for row in rows) for i in (0, 1)]
    print("\npipeline summary (stage, artefact, key figure)")
    for stage, path, figure in rows:
        print(f"  {stage:<{width[0]}}  {path:<{width[1]}}  {figure}", flush=True)


@nox.session(venv_backend="none", requires=["dev"], default=False)
def qa(session: nox.Session) -> None:
    """The four gates (coverage, mutation, security, docs-gate), then their summary table.

    Runs nothing itself: it queues each gate's session and then `summary`, so a failing gate
    does not stop the others. For the pull-request modes run the gates' own sessions
    (`nox -s coverage -- --base REF`, `nox -s mutation -- --quick --base REF`).
    """
    if session.posargs:
        session.error("qa takes no arguments: pass them to a gate's own session")
    for name in ("coverage", "mutation", "security", "docs-gate", "summary"):
        session.notify(name)


@nox.session(venv_backend="none", default=False)
def summary(session: nox.Session) -> None:
    """Print the gates' table from qa/reports/gate-*.json (python -m qa.summary; runs no gate).

    Run on its own: every gate, or the gates named after `--`. Queued by the gates of this
    invocation: those gates only, then the verdict (the gates' own arguments, such as
    `nox -s mutation -- --module M`, reach every session and are not gate names here).
    """
    session.run(sys.executable, "-m", "qa.summary", *(GATES_RUN or session.posargs))


@nox.session(
    venv_backend="none",
    requires=["lint", "workflows", "typecheck", "security", "docs", "tests"],
    default=False,
)
def ci(session: nox.Session) -> None:
    """What CI runs (the README's test command): lint, workflows, typecheck, security, docs, tests.

    Runs nothing itself. Arguments after `--` reach pytest in `tests` (the other sessions
    that `ci` lists take none).
    """
