from pathlib import Path

import pytest

import qa.docs.__main__ as docs_main
from qa import gates
from qa.docs.__main__ import build

CONF = """\
import sys
sys.path.insert(0, {src!r})
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.doctest"]
source_suffix = {{".md": "markdown"}}
exclude_patterns = ["_build"]
"""

MODULE = '''\
"""A toy module."""


def real() -> int:
    """Return one.

    >>> from toymod import real
    >>> real()
    1
    """
    return 1
'''


def _project(tmp_path: Path, page: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "toymod.py").write_text(MODULE)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "conf.py").write_text(CONF.format(src=str(src)))
    (docs / "index.md").write_text(page)
    return docs


def test_a_page_referencing_a_missing_function_fails_the_build(tmp_path: Path) -> None:
    docs = _project(tmp_path, "# Toy\n\nSee {py:func}`toymod.does_not_exist`.\n")
    assert build(docs, tmp_path / "out") != 0


def test_a_page_referencing_a_real_function_builds(tmp_path: Path) -> None:
    page = "# Toy\n\n```{eval-rst}\n.. autofunction:: toymod.real\n```\n\n"
    page += "See {py:func}`toymod.real`.\n"
    docs = _project(tmp_path, page)
    assert build(docs, tmp_path / "out") == 0
    assert (tmp_path / "out" / "doctest" / "output.txt").exists()


def test_a_failing_docstring_example_fails_the_doctest_build(tmp_path: Path) -> None:
    page = "# Toy\n\n```{eval-rst}\n.. autofunction:: toymod.real\n```\n"
    docs = _project(tmp_path, page)
    (tmp_path / "src" / "toymod.py").write_text(MODULE.replace('    1\n    """', '    2\n    """'))
    assert build(docs, tmp_path / "out") != 0
    assert "1 failure" in (tmp_path / "out" / "doctest" / "output.txt").read_text()


def test_the_real_conf_is_nitpicky_without_a_blanket_ignore() -> None:
    conf = (gates.ROOT / "docs" / "conf.py").read_text()
    assert "nitpick_ignore_regex" in conf
    assert '(r"py:.*", r".*")' not in conf


def test_without_chromium_the_build_skips_screenshots_with_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(docs_main, "build", lambda source, out: 0)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert docs_main.main(["build", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "screenshot check skipped: no Chromium on PATH" in out
    assert f"site: {tmp_path / 'html' / 'index.html'}" in out


def test_on_github_actions_a_missing_chromium_fails_the_docs_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(docs_main, "build", lambda source, out: 0)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert docs_main.main(["build", "--out", str(tmp_path)]) == 1
    assert "screenshot check FAILED" in capsys.readouterr().out


def test_with_chromium_the_build_runs_the_screenshot_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[Path] = []

    def render(html: Path, out: Path) -> int:
        rendered.append(html)
        return 1

    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(docs_main, "build", lambda source, out: 0)
    monkeypatch.setattr(docs_main, "render_pages", render)
    assert docs_main.main(["build", "--out", str(tmp_path)]) == 1
    assert rendered == [tmp_path / "html"]
