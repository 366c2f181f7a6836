"""Progress output of the CLIs: plain lines in a log, nothing with ``--no-progress``."""

from __future__ import annotations

import argparse
import io
from typing import Any

from kd_train import cliutil
from kd_train.cliutil import progress_bar
from transformers.utils import logging as hf_logging


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_in_a_log_writes_whole_lines_without_carriage_returns() -> None:
    out = io.StringIO()
    with progress_bar(total=1000, desc="distill", file=out) as bar:
        for step in range(1000):
            bar.update(1)
            bar.set_postfix(loss=f"{step:.1f}")
    assert "\r" not in out.getvalue()


def test_a_bar_in_a_log_prints_a_start_and_an_end_line_within_the_interval() -> None:
    out = io.StringIO()
    with progress_bar(range(1000), desc="classify", file=out) as bar:
        for _ in bar:
            pass
    assert [line.split(" [")[0] for line in out.getvalue().splitlines()] == [
        "classify:   0% 0/1000",
        "classify: 100% 1000/1000",
    ]


def test_a_bar_on_a_terminal_redraws_in_place() -> None:
    out = FakeTerminal()
    with progress_bar(total=3, desc="t", file=out) as bar:
        bar.update(3)
    assert "\r" in out.getvalue()


def test_a_disabled_bar_prints_nothing() -> None:
    out = io.StringIO()
    with progress_bar(total=3, desc="off", file=out, enabled=False) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def run_command(no_progress: bool) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def command(args: argparse.Namespace) -> int:
        seen["enabled"] = hf_logging.is_progress_bar_enabled()
        out = io.StringIO()
        with hf_logging.tqdm(range(3), desc="Loading weights", file=out) as bar:
            for _ in bar:
                pass
        seen["output"] = out.getvalue()
        return 0

    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=command)
    cliutil.run(parser, ["--no-progress"] if no_progress else [])
    return seen


def test_no_progress_silences_transformers_loading_bars() -> None:
    assert run_command(no_progress=True) == {"enabled": False, "output": ""}


def test_transformers_bars_are_restored_after_the_command() -> None:
    run_command(no_progress=True)
    assert hf_logging.is_progress_bar_enabled()


def test_transformers_bars_in_a_log_are_plain_lines() -> None:
    output = run_command(no_progress=False)["output"]
    assert (output.count("\n"), "\r" in output) == (2, False)
