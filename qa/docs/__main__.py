"""``python -m qa.docs``: the docs build and the doc-vs-code gate.

* ``build [--out DIR] [--source DIR]`` (what ``nox -s docs`` and so ``nox -s ci`` run):
  ``sphinx-build -W -n --keep-going`` with the html builder, then the doctest builder
  (every ``{doctest}`` block and, through autodoc, every docstring example of the pages).
  Nitpicky mode fails on a reference to an API that does not exist; the CLI pages are
  rendered from the real parsers (sphinx-argparse-cli). Then the screenshot check (below)
  when a Chromium is on PATH; without one it prints one line saying the check was skipped and
  why, and the build still passes, except on GitHub Actions (``GITHUB_ACTIONS=true``), where
  the workflows install Chromium and a missing one fails. Last it prints where the site is.
* ``run``: ``build`` into ``docs/_build``, then ``tests/test_readme_commands.py`` (every
  shell and python example of README.md and the site is run or marked not run) and
  ``tests/docs/test_cli_commands.py`` (every kd-train / kd-eval / kd-convert command line is
  parsed by the real CLI), with the screenshot check required.

The screenshot check is ``docs/render_pages.py``: the home page, an API page and the QA
status page rendered to PNG with headless Chromium (the system's ``chromium``) and checked
not to be blank.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    """Run the tests of the docs' commands: each exercised or marked, each CLI line parsed."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
    cmd += ["tests/test_readme_commands.py", "tests/docs/test_cli_commands.py"]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=gates.ROOT, check=False).returncode


#: Pages rendered by headless Chromium after the build (they must not come out blank).
RENDERED = ("index.html", "api/kd_train.html", "qa/status.html")


def render_pages(html: Path, out: Path) -> int:
    """Screenshot :data:`RENDERED` with headless Chromium; non-zero if one is blank or missing."""
    cmd = [sys.executable, "docs/render_pages.py", str(html), str(out), *RENDERED]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=gates.ROOT, check=False).returncode


#: Names of a Chromium binary, in the order they are looked up on PATH.
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "chrome")


def screenshots(out: Path, required: bool) -> int:
    """The screenshot check of the built site in ``out``, or a line saying why it is skipped.

    Skipped (0) without a Chromium on PATH unless ``required`` (then 1).
    """
    if any(shutil.which(name) for name in CHROMIUM):
        return render_pages(out / "html", out / "screenshots")
    where = " (GitHub Actions: the workflow must install chromium)" if required else ""
    print(
        f"qa.docs: screenshot check {'FAILED' if required else 'skipped'}: no Chromium on PATH"
        f" ({', '.join(CHROMIUM)}; Debian: apt-get install chromium){where}. CI installs it"
        " and runs the check.",
        flush=True,
    )
    return 1 if required else 0


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
        rc = build(args.source, args.out)
        on_github = os.environ.get("GITHUB_ACTIONS") == "true"
        rc = rc or screenshots(args.out, required=on_github)
        print(f"qa.docs: site: {args.out / 'html' / 'index.html'}", flush=True)
        return rc
    rc_build = build(gates.ROOT / "docs", gates.ROOT / "docs" / "_build")
    rc_readme = readme_commands()
    build_dir = gates.ROOT / "docs" / "_build"
    rc_render = screenshots(build_dir, required=True)
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
