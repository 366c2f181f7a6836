"""``python -m qa.docs``: the doc-vs-code gate (``run``, what ``nox -s docs-gate`` runs).

* ``build [--out DIR] [--source DIR]`` (what ``nox -s docs`` and so ``nox -s ci`` run):
  ``sphinx-build -W -n --keep-going`` with the html builder, then the doctest builder
  (every ``{doctest}`` block and, through autodoc, every docstring example of the pages).
  Nitpicky mode fails on a reference to an API that does not exist; the CLI pages are
  rendered from the real parsers (sphinx-argparse-cli).
* ``run``: ``build`` into ``docs/_build``, then ``tests/test_readme_commands.py`` (every
  shell and python example of README.md and the site is run or marked not run), then
  ``docs/render_pages.py``: the home page, an API page and the QA status page rendered to
  PNG with headless Chromium (the system's ``chromium``) and checked not to be blank.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from qa import gates, summary

BUILDERS = ("html", "doctest")


def sphinx_command(builder: str, source: Path, out: Path) -> list[str]:
    """The sphinx-build command line of one builder."""
    return [
        sys.executable,
        "-m",
        "sphinx",
        "-q",
        "-W",
        "-n",
        "--keep-going",
        "-b",
        builder,
        str(source),
        str(out / builder),
    ]


def build(source: Path, out: Path) -> int:
    """Run every builder; return the first non-zero exit code (all builders still run)."""
    rcs = []
    for builder in BUILDERS:
        cmd = sphinx_command(builder, source, out)
        print("+", " ".join(cmd), flush=True)
        rcs.append(subprocess.run(cmd, cwd=gates.ROOT, check=False).returncode)
    return next((rc for rc in rcs if rc), 0)


def readme_commands() -> int:
    """Run the test that every README/quickstart command is exercised or marked not run."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
    cmd.append("tests/test_readme_commands.py")
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=gates.ROOT, check=False).returncode


#: Pages rendered by headless Chromium after the build (they must not come out blank).
RENDERED = ("index.html", "api/kd_train.html", "qa/status.html")


def render_pages(html: Path, out: Path) -> int:
    """Screenshot :data:`RENDERED` with headless Chromium; non-zero if one is blank or missing."""
    cmd = [sys.executable, "docs/render_pages.py", str(html), str(out), *RENDERED]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=gates.ROOT, check=False).returncode


def main(argv: list[str]) -> int:
    """Parse ``argv`` and run ``build`` or the whole gate."""
    parser = argparse.ArgumentParser(prog="python -m qa.docs", description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    b = sub.add_parser("build", help="sphinx html + doctest, -W -n")
    b.add_argument("--out", type=Path, default=gates.ROOT / "docs" / "_build")
    b.add_argument("--source", type=Path, default=gates.ROOT / "docs")
    sub.add_parser("run", help="build + README command check (default)")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        return build(args.source, args.out)
    rc_build = build(gates.ROOT / "docs", gates.ROOT / "docs" / "_build")
    rc_readme = readme_commands()
    build_dir = gates.ROOT / "docs" / "_build"
    rc_render = render_pages(build_dir / "html", build_dir / "screenshots")
    passed = rc_build == 0 and rc_readme == 0 and rc_render == 0
    verdict = {True: "ok", False: "FAILED"}
    figure = (
        f"sphinx -W -n + doctest: {verdict[rc_build == 0]}; "
        f"examples: {verdict[rc_readme == 0]}; rendered pages: {verdict[rc_render == 0]}"
    )
    summary.write(summary.Summary("docs", figure, "0 warnings, 0 failures", passed))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
