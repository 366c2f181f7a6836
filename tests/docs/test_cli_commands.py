"""Every kd-train / kd-eval / kd-convert command line in the docs parses with the real CLI.

Pages: README.md, packages/*/README.md and docs/**/*.md. A command marked not run is parsed
all the same (qa/docs/commands.py says how lines are found and what a placeholder is).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from qa.docs.commands import Invocation, invocations, problems, strict

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    str(p.relative_to(ROOT))
    for p in [
        ROOT / "README.md",
        *(ROOT / "packages").glob("*/README.md"),
        *(ROOT / "docs").rglob("*.md"),
    ]
    if "_build" not in p.parts
)


def _make(program: str) -> Callable[[], argparse.ArgumentParser]:
    def make() -> argparse.ArgumentParser:
        if program == "kd-train":
            from kd_train.cli import make_parser
        elif program == "kd-eval":
            from kd_eval.cli import make_parser
        else:
            from kd_convert.cli import make_parser
        return strict(make_parser())

    return make


PARSERS = {program: _make(program) for program in ("kd-train", "kd-eval", "kd-convert")}


def _problems(inv: Invocation) -> list[str]:
    return [f"{inv.where()}\n    {p}" for p in problems(inv, PARSERS[inv.program]())]


def _all() -> list[Invocation]:
    return [i for p in PAGES for i in invocations(p, (ROOT / p).read_text(encoding="utf-8"))]


def test_every_cli_command_line_in_the_docs_parses() -> None:
    found = _all()
    assert {i.program for i in found} == set(PARSERS), "the extractor or the pages changed"
    assert any(i.whole for i in found)
    assert any(not i.whole for i in found)
    bad = [p for inv in found for p in _problems(inv)]
    assert bad == [], "these commands do not parse with the real CLI:\n" + "\n".join(bad)


def test_the_guide_command_that_is_marked_not_run_is_parsed_too() -> None:
    data = [i for i in _all() if i.page == "docs/guides/data.md" and i.program == "kd-train"]
    assert any("--vocab-size" in i.argv and i.whole for i in data)


# Planted faults: a renamed flag, an unknown subcommand, a missing value, an abbreviation.
PAGE = """
Check a file:

<!-- not-run: needs a dataset -->
```console
$ kd-train validate-data train.jsonl --mode quarantine {flag} 49152   # see below
rows: 10
```

Then export it with `kd-convert export --format onnx MODEL_DIR OUT_DIR`.
"""


def _page_problems(text: str) -> list[str]:
    return [p for inv in invocations("x.md", text) for p in _problems(inv)]


def test_a_renamed_flag_in_a_not_run_block_fails() -> None:
    assert _page_problems(PAGE.format(flag="--vocab-size")) == []
    found = _page_problems(PAGE.format(flag="--vocab-sizes"))
    assert len(found) == 1
    assert "--vocab-sizes" in found[0]
    assert "x.md:6:" in found[0]


def test_an_abbreviated_flag_fails() -> None:
    assert "--vocab" in _page_problems(PAGE.format(flag="--vocab"))[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```bash\nkd-eval fidelty --teacher T --student S --data d.jsonl\n```", "fidelty"),
        ("```sh\nkd-convert export --format onxx runs/s out/onnx\n```", "onxx"),
        ("```\nkd-convert export --format onnx\n```", "required"),
        ("Run `kd-train distill --confg run.yaml` to train.", "--confg"),
        ("Run `kd-train distil` to train.", "distil"),
        ("```console\n$ OUT=/tmp/o python -m kd_eval.cli report a.json --out-dir $OUT \\\n"
         "    --nme run-7\n```", "--nme"),
    ],
)  # fmt: skip
def test_a_wrong_command_line_fails(text: str, expected: str) -> None:
    found = _page_problems(text)
    assert len(found) == 1, found
    assert expected in found[0]


def test_placeholders_variables_and_continuations_parse() -> None:
    text = (
        "```console\n$ kd-convert export --format onnx $RUN/student OUT_DIR \\\n"
        "    --lengths 64,128 && kd-convert verify OUT_DIR  # then look\n```\n"
        "`kd-eval drafter --teacher DIR --student DIR` and `kd-train schema run`.\n"
    )
    found = invocations("x.md", text)
    assert [(i.program, i.whole) for i in found] == [
        ("kd-convert", True),
        ("kd-convert", True),
        ("kd-eval", False),
        ("kd-train", False),
    ]
    assert _page_problems(text) == []
