"""Every run config in the teachers guide is accepted by the real config parser."""

import re
from pathlib import Path

import pytest
import yaml
from kd_train.trainer import parse_config

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "teachers.md"
BLOCK = re.compile(r"```yaml\n# kd-config: (\w+)\n(.*?)```", re.DOTALL)


def configs() -> dict[str, str]:
    return {name: body for name, body in BLOCK.findall(GUIDE.read_text(encoding="utf-8"))}


def test_the_guide_shows_a_config_for_every_teacher_kind():
    assert sorted(configs()) == ["cached", "hf", "http", "records"]


@pytest.mark.parametrize("kind", ["cached", "hf", "http", "records"])
def test_guide_config_parses_with_its_teacher_kind(kind):
    cfg = parse_config(yaml.safe_load(configs()[kind]))
    assert cfg.teacher.kind == kind
