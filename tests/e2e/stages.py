"""Helpers of the end-to-end tests: run a stage's command line, read what it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
WHEN = ("before", "after")


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run one command line to completion; fail the test with its stderr if it exits non-zero.

    ``args[0]`` is a console script installed next to the interpreter (``kd-eval``,
    ``kd-convert``) or ``python``.
    """
    program = sys.executable if args[0] == "python" else str(BIN / str(args[0]))
    proc = subprocess.run(
        [program, *map(str, args[1:])], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}",
            pytrace=False,
        )
    return proc


def read_json(path: Path) -> Any:
    """Parse a JSON file written by a stage."""
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Distilled:
    """The output of ``python -m kd_train.pipelines all``: its folder, figures and stdout."""

    out: Path
    summary: dict[str, Any]
    stdout: str

    def init_dir(self, pipeline: str) -> Path:
        """The untrained student of ``pipeline`` (``toy`` or ``8-ball``)."""
        return self.out / pipeline / "student-init"

    def heldout(self, pipeline: str) -> Path:
        """The held-out JSONL split of ``pipeline``."""
        return self.out / pipeline / "data" / "heldout.jsonl"
