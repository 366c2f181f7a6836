"""``--help`` and usage errors of the three CLIs answer without importing torch or transformers.

Each check runs the CLI in a fresh interpreter (``sys.modules`` of the test process already
holds torch) and reports which heavy modules the parse imported. The planted test proves the
check can fail: a command module with ``import torch`` at its top is caught.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers")

CLIS = ("kd_train", "kd_eval", "kd_convert")

# Run ``build(argv)`` the way the console script does; print the heavy modules then loaded.
PROBE = textwrap.dedent(
    """
    import json, sys
    {setup}
    try:
        build().parse_args(sys.argv[1:])
    except SystemExit:
        pass
    print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.__stderr__)
    """
)


def heavy_imports(setup: str, argv: list[str], cwd: Path | None = None) -> list[str]:
    """The heavy modules imported by building the parser ``setup`` defines and parsing ``argv``."""
    code = PROBE.format(setup=setup, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


def cli_setup(package: str) -> str:
    return f"from {package}.cli import make_parser as build"


def subcommands(package: str) -> list[str]:
    parser = __import__(f"{package}.cli", fromlist=["make_parser"]).make_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("package", CLIS)
@pytest.mark.parametrize("argv", [["--help"], ["--no-such-option"], ["no-such-command"]])
def test_help_and_usage_errors_import_no_torch(package: str, argv: list[str]) -> None:
    assert heavy_imports(cli_setup(package), argv) == []


@pytest.mark.parametrize("package", CLIS)
def test_every_subcommand_help_imports_no_torch(package: str) -> None:
    for command in subcommands(package):
        assert heavy_imports(cli_setup(package), [command, "--help"]) == [], command


def test_a_command_module_importing_torch_at_the_top_is_caught(tmp_path: Path) -> None:
    commands = tmp_path / "planted_commands"
    commands.mkdir()
    (commands / "__init__.py").write_text('"""Planted commands."""\n', encoding="utf-8")
    (commands / "heavy.py").write_text(
        "import torch\n\n\ndef register(subparsers):\n    subparsers.add_parser('heavy')\n",
        encoding="utf-8",
    )
    setup = (
        "import planted_commands\n"
        "from kd_train.cliutil import build_parser\n"
        "def build():\n"
        "    return build_parser('planted', 'demo', planted_commands, '0')\n"
    )
    assert heavy_imports(setup, ["--help"], cwd=tmp_path) == ["torch"]


def test_spelled_out_choices_match_the_library() -> None:
    from kd_train.commands.cache_logits import DTYPE_NAMES
    from kd_train.commands.schema import CONFIG_NAMES
    from kd_train.commands.validate_data import MODE_NAMES
    from kd_train.data.quarantine import MODES
    from kd_train.schemas import CONFIGS
    from kd_train.teachers.hf import DTYPES

    assert (tuple(sorted(DTYPES)), tuple(CONFIGS), MODES) == (DTYPE_NAMES, CONFIG_NAMES, MODE_NAMES)
