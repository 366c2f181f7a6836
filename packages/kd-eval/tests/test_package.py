import json
import re
import tomllib
from pathlib import Path

import kd_eval
from kd_eval.cli import main
from kd_eval.errors import KDEvalError
from kd_train.errors import KDTrainError

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def test_version_is_semver_and_matches_changelog():
    assert re.fullmatch(r"\d+\.\d+\.\d+", kd_eval.__version__)
    changelog = (PACKAGE_DIR / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{kd_eval.__version__}]" in changelog


def test_depends_on_a_kd_train_range_not_a_pin():
    meta = tomllib.loads((PACKAGE_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    deps = [d for d in meta["project"]["dependencies"] if d.startswith("kd-train")]
    assert deps == ["kd-train>=0.1,<0.2"]


def test_cli_version_reports_this_package(capsys):
    assert main(["version"]) == 0
    assert json.loads(capsys.readouterr().out)["kd-eval"] == kd_eval.__version__


def test_errors_derive_from_the_kd_train_base():
    assert issubclass(KDEvalError, KDTrainError)
