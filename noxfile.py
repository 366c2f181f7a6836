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
    "kd-eval": ("kd-train", "kd-eval"),
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
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build",
            "-q",
            "-W",
            "-n",
            "--keep-going",
            "-b",
            builder,
            "docs",
            str(build / builder),
        )


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
    """Line + branch coverage of all tests, reports in qa/reports/, floors from qa/gates.toml."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS)
    reports = ROOT / "qa" / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    session.env["COVERAGE_PROCESS_START"] = str(ROOT / "pyproject.toml")
    session.run("coverage", "erase")
    session.run(
        "pytest",
        *[f"packages/{p}/tests" for p in PACKAGES],
        "tests/integration",
        "-m",
        "not slow and not e2e",
        "--cov",
        "--cov-report=",
        *session.posargs,
    )
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "json", "-o", str(reports / "coverage.json"))
    session.run("coverage", "html", "-d", str(reports / "coverage-html"))
    session.run("python", "-m", "qa.coverage", "check", str(reports / "coverage.json"))


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing (mutatest through qa/mutation's shim) of the critical modules."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS)
    install(session, "-c", str(ROOT / "ci" / "constraints-mutatest.txt"), "mutatest")
    session.run("python", "-m", "qa.mutation", *session.posargs)


@nox.session
def security(session: nox.Session) -> None:
    """bandit + semgrep (rules in qa/security/semgrep) against the accepted-findings register."""
    start(session)
    session.install("-c", str(ROOT / "ci" / "constraints-semgrep.txt"), "semgrep")
    install(session, "bandit")
    session.run("python", "-m", "qa.security", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx site with -W -n and run every doctest in the docs and docstrings."""
    start(session)
    all_packages(session)
    install(session, *DOCS_DEPS)
    run_docs(session, ROOT / "docs" / "_build")


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
    """The main job: distil a toy student end to end, evaluate it and export it."""
    start(session)
    all_packages(session)
    out = ROOT / "runs" / "pipeline"
    session.run("python", "-m", "kd_train.pipelines", "all", "--out", str(out), *session.posargs)


@nox.session
def qa(session: nox.Session) -> None:
    """All QA gates (coverage, mutation, security, docs) and one summary table."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS, *DOCS_DEPS, "bandit")
    session.install("-c", str(ROOT / "ci" / "constraints-semgrep.txt"), "semgrep")
    install(session, "-c", str(ROOT / "ci" / "constraints-mutatest.txt"), "mutatest")
    session.run("python", "-m", "qa", "all", *session.posargs)


@nox.session
def ci(session: nox.Session) -> None:
    """What CI runs (the README's test command): lint, types, docs, then every fast test."""
    start(session)
    all_packages(session)
    install(session, *TEST_DEPS, *DOCS_DEPS, "ruff", "mypy", "types-PyYAML", "check-jsonschema")
    run_lint(session)
    session.run("mypy", *SOURCES)
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
