import json
import re
import tomllib
from pathlib import Path

import kd_train
import pytest
from kd_train.cli import main
from kd_train.errors import KDTrainError
from kd_train.testing import save_tiny_llama, train_tiny_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def test_version_is_semver_and_matches_changelog():
    assert re.fullmatch(r"\d+\.\d+\.\d+", kd_train.__version__)
    changelog = (PACKAGE_DIR / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{kd_train.__version__}]" in changelog


def test_pyproject_reads_version_from_the_package():
    meta = tomllib.loads((PACKAGE_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in meta["project"]["dynamic"]
    assert meta["tool"]["hatch"]["version"]["path"] == "src/kd_train/__init__.py"


def test_cli_version_prints_json(capsys):
    assert main(["version"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert versions["kd-train"] == kd_train.__version__
    assert "torch" in versions


def test_cli_without_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_errors_share_one_base():
    assert issubclass(KDTrainError, Exception)


def test_tiny_tokenizer_round_trips_any_text():
    tok = train_tiny_tokenizer(vocab_size=300)
    text = 'naïve café — ✓ {"a": 1}'
    assert tok.decode(tok(text)["input_ids"]) == text


def test_tiny_llama_fixture_is_gqa_and_loads_back(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    ids = tok("The quick brown fox", return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tok))


def test_save_tiny_llama_is_deterministic(tmp_path):
    a = save_tiny_llama(tmp_path / "a", seed=3)
    b = save_tiny_llama(tmp_path / "b", seed=3)
    ma = AutoModelForCausalLM.from_pretrained(a)
    mb = AutoModelForCausalLM.from_pretrained(b)
    for (na, pa), (nb, pb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert na == nb
        assert (pa == pb).all(), na


def test_teacher_and_student_share_the_tokenizer(tiny_llama_dir, tiny_teacher_dir):
    s = AutoTokenizer.from_pretrained(tiny_llama_dir)
    t = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    assert s.get_vocab() == t.get_vocab()
