"""Every task a person or CI runs is a nox session here; `nox -l` lists them.

Each session installs with `-c ci/constraints.txt` (torch==2.13.0 and the rest of the dev/CI
set) into nox's default virtualenv backend with pip. No session downloads from a model hub:
HF_HUB_OFFLINE=1 is set for all of them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = str(ROOT / "ci" / "constraints.txt")
PACKAGES = ("kd-train", "kd-eval", "kd-convert")
SOURCES = [f"packages/{p}/src" for p in PACKAGES]
TEST_DEPS = (
    "pytest",
    "pytest-xdist",
    "pytest-timeout",
    "pytest-cov",
    "hypothesis",
    "pytest-postgresql",
    "psycopg[binary]",
    "jsonschema",  # the KD record and report schemas are checked against their validators
    # the qa tools' own tests run bandit, diff-cover and `nox -l` (tests/test_readme_commands.py)
    "bandit",
    "diff-cover",
    "nox",
)
DOCS_DEPS = ("sphinx", "furo", "myst-parser", "sphinx-argparse-cli", "matplotlib")
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Which packages a package's tests need installed (kd-eval and kd-convert depend on kd-train).
NEEDS = {
    "kd-train": ("kd-train",),
    "kd-eval": ("kd-train", "kd-eval[test]"),
    "kd-convert": ("kd-train", "kd-convert[coreml]"),
}
UNIT_MARKERS = "not slow and not e2e and not integration"

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]


def install(session: nox.Session, *args: str) -> None:
    """pip install with the dev/CI constraints, always."""
    session.install("-c", CONSTRAINTS, *args)


def install_packages(session: nox.Session, *names: str) -> None:
    """Editable installs of our packages (name may carry extras: 'kd-convert[coreml]')."""
    args: list[str] = []
    for name in names:
        base, _, extra = name.partition("[")
        args += ["-e", f"packages/{base}" + (f"[{extra}" if extra else "")]
    install(session, *args)


def all_packages(session: nox.Session) -> None:
    install_packages(session, "kd-train[postgres]", "kd-eval", "kd-convert[coreml]")


def start(session: nox.Session) -> None:
    session.env.update(OFFLINE_ENV)


def run_lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    workflows = sorted(str(p) for p in (ROOT / "ci" / "workflows").glob("*.yml"))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)


def run_docs(session: nox.Session, build: Path) -> None:
    """sphinx-build -W -n, html then doctest: the command lives in qa/docs (one place)."""
    session.run("python", "-m", "qa.docs", "build", "--out", str(build))


def tool_venv(session: nox.Session, name: str, constraints: str, package: str) -> Path:
    """A virtualenv of its own for a tool whose pins clash with ci/constraints.txt.

    Built once from the session's Python (mutatest's bytecode must match the tests' Python)
    under .nox/_tools/, then reused; returns its bin folder.
    """
    py_version = session.run(
        "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])", silent=True
    )
    venv = ROOT / ".nox" / "_tools" / f"{name}-py{str(py_version).strip()}"
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    if not (bindir / "python").exists():
        session.run("python", "-m", "venv", str(venv))
    pins = str(ROOT / "ci" / constraints)
    session.run(
        str(bindir / "python"), "-m", "pip", "install", "-q", "-c", pins, package, external=True
    )
    return bindir


def semgrep_tool(session: nox.Session) -> None:
    """semgrep in its own venv (ci/constraints-semgrep.txt), exported as $KD_SEMGREP."""
    bindir = tool_venv(session, "semgrep", "constraints-semgrep.txt", "semgrep")
    session.env["KD_SEMGREP"] = str(bindir / "semgrep")


def mutatest_tool(session: nox.Session) -> None:
    """mutatest in its own venv (it pins coverage<6), exported as $KD_MUTATEST_PYTHON."""
    bindir = tool_venv(session, "mutatest", "constraints-mutatest.txt", "mutatest")
    session.env["KD_MUTATEST_PYTHON"] = str(bindir / "python")


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint + format check, and validate the GitHub workflows against their schema."""
    start(session)
    install(session, "ruff", "check-jsonschema")
    run_lint(session)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy (strict) over the three packages."""
    start(session)
    all_packages(session)
    install(session, "mypy", "types-PyYAML", "pytest")
    session.run("mypy", *SOURCES)


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Unit tests and doctests of one package, in parallel (pytest-xdist)."""
    start(session)
    install_packages(session, *NEEDS[package])
    install(session, *TEST_DEPS)
    src = f"packages/{package}/src"
    session.run(
        "pytest",
        f"packages/{package}/tests",
        src,
        "--doctest-modules",
        "-m",
        UNIT_MARKERS,
        *session.posargs,
    )


@nox.session
def integration(session: nox.Session) -> None:
    """Cross-package tests with real processes: SQLite/PostgreSQL, HTTP on loopback, torchrun."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS)
    session.run("pytest", "tests/integration", "-m", "integration and not e2e", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """End-to-end runs of whole pipelines through the command lines (slow)."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS)
    session.run("pytest", "tests/e2e", "-m", "e2e", *session.posargs)


@nox.session
def coverage(session: nox.Session) -> None:
    """Line + branch coverage of all tests, reports in qa/reports/, floors from qa/gates.toml.

    `nox -s coverage -- --base origin/main` adds diff coverage and the floor ratchet.
    """
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS)
    session.run("python", "-m", "qa.coverage", "run", *session.posargs)


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing (mutatest through qa/mutation's shim) of the critical modules.

    `nox -s mutation -- --quick --base origin/main` mutates only the changed critical files.
    """
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS)
    mutatest_tool(session)
    # the shim against the real mutatest first: a toy package whose weak test lets mutants live
    session.run("pytest", "qa/tests/test_mutation_gate.py", "-m", "slow", "-n", "0", "-q")
    session.run("python", "-m", "qa.mutation", *session.posargs)


@nox.session
def security(session: nox.Session) -> None:
    """bandit + semgrep (rules in qa/security/semgrep) against the accepted-findings register."""
    start(session)
    install(session, "bandit")
    semgrep_tool(session)
    session.run("python", "-m", "qa.security", *(session.posargs or ["run"]))


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx site with -W -n, run every doctest, check the README's commands."""
    start(session)
    all_packages(session)
    install(session, *DOCS_DEPS, "pytest", "pytest-xdist", "nox")
    session.run("python", "-m", "qa.docs", "run")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: print figures, compare with the stored baselines as ratios (qa/perf)."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS, "liger-kernel", "torchtune", "trl")
    session.run("python", "-m", "qa.perf", "bench", *session.posargs)


@nox.session
def load(session: nox.Session) -> None:
    """Load and fault scenarios on loopback, bounded in time and count (qa/perf)."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS)
    session.run("python", "-m", "qa.perf", "load", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build wheels + sdists of the three packages, check them, install each in a clean venv."""
    start(session)
    install(session, "build", "twine", "check-wheel-contents", "virtualenv")
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
            py = str(Path(tmp) / ("Scripts" if sys.platform == "win32" else "bin") / "python")
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


@nox.session
def pipeline(session: nox.Session) -> None:
    """The main job: distil the toy students, evaluate them, export one; a closing table.

    Every stage is a real command line and a failing one fails the session:
    `python -m kd_train.pipelines all` (toy and 8-ball students, held-out splits), then
    `kd-eval fidelity` (toy student against its teacher, untrained and distilled),
    `kd-eval classify` (8-ball student on its held-out split, untrained and distilled),
    `kd-eval report` (JSON + HTML), `kd-convert export` (onnx, torchscript) and `verify`.
    tests/e2e/test_pipeline.py runs the same stages.
    """
    import json  # only this session reads results back

    def read(path: Path) -> dict:  # type: ignore[type-arg]
        return json.loads(path.read_text())

    start(session)
    all_packages(session)
    out = ROOT / "runs" / "pipeline"
    ev, ex, quiet = out / "eval", out / "export", "--no-progress"
    # a fresh run each time: the trainer refuses an output_dir that already holds checkpoints
    shutil.rmtree(out, ignore_errors=True)
    session.run("python", "-m", "kd_train.pipelines", "all", "--out", str(out), *session.posargs)
    toy, ball = read(out / "summary.json")["toy"], read(out / "summary.json")["8-ball"]
    init = {name: str(out / name / "student-init") for name in ("toy", "8-ball")}
    for when, student in (("before", init["toy"]), ("after", toy["student_dir"])):
        session.run(
            *("kd-eval", "fidelity", "--teacher", toy["teacher_dir"], "--student", student),
            *("--data", str(out / "toy" / "data" / "heldout.jsonl"), quiet),
            *("--out", str(ev / f"toy-fidelity-{when}.json"), "--name", f"toy-{when}"),
        )
    for when, student in (("before", init["8-ball"]), ("after", ball["student_dir"])):
        session.run(
            *("kd-eval", "classify", student, "--labels", "8ball"),
            *("--data", str(out / "8-ball" / "data" / "heldout.jsonl"), quiet),
            *("--out", str(ev / f"8-ball-classify-{when}.json"), "--name", f"8-ball-{when}"),
        )
    merged = [str(ev / "toy-fidelity-after.json"), str(ev / "8-ball-classify-after.json")]
    session.run("kd-eval", "report", *merged, "--out-dir", str(ev / "report"), "--name", "pipeline")
    for fmt in ("onnx", "torchscript"):
        session.run(
            "kd-convert", "export", "--format", fmt, toy["student_dir"], str(ex / fmt), quiet
        )
        session.run("kd-convert", "verify", str(ex / fmt))

    kd = "KD loss {student_kd_before:.4f} -> {student_kd_after:.4f} (first -> last step)"
    fid = [
        read(ev / f"toy-fidelity-{w}.json")["fidelity"]["aggregate"] for w in ("before", "after")
    ]
    kl, top1 = ([f[key]["value"] for f in fid] for key in ("forward_kl", "top1_agreement"))
    cls = [read(ev / f"8-ball-classify-{w}.json")["classification"] for w in ("before", "after")]
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


@nox.session
def qa(session: nox.Session) -> None:
    """All QA gates (coverage, mutation, security, docs) and one summary table."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS, *DOCS_DEPS)
    semgrep_tool(session)
    mutatest_tool(session)
    session.run("python", "-m", "qa", "all", *session.posargs)


@nox.session
def ci(session: nox.Session) -> None:
    """What CI runs (the README's test command): lint, types, security, docs, every fast test."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS, *DOCS_DEPS, "ruff", "mypy", "types-PyYAML", "check-jsonschema")
    semgrep_tool(session)
    run_lint(session)
    session.run("mypy", *SOURCES, "qa")
    session.run("python", "-m", "qa.security", "run")
    run_docs(session, Path(tempfile.mkdtemp(prefix="kd-docs-")))
    session.run(
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
        *session.posargs,
        env={"KD_CI": os.environ.get("CI", "")},
    )
