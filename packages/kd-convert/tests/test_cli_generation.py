"""End to end through the CLI: ``kd-convert export --for generation`` then ``verify``."""

import json

import pytest
from kd_convert.cli import main

pytestmark = pytest.mark.xdist_group("kd-convert-exports")


@pytest.mark.e2e
@pytest.mark.slow
def test_generation_export_then_verify_through_the_cli(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["export", "--format", "onnx", "--for", "generation", "--max-length", "96"]
    code = main([*argv, "--lengths", "8", str(tiny_llama_dir), str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "same ids" in printed
    assert "parity passed" in printed
    assert {p.name for p in out.iterdir()} == {
        "prefill.onnx", "decode.onnx", "contract.json", "parity.json"
    }  # fmt: skip
    assert json.loads((out / "parity.json").read_text())["tokens"]["passed"] is True
    assert main(["verify", str(out)]) == 0
    assert "generation with a KV cache of 96" in capsys.readouterr().out


def test_max_length_beyond_the_model_exits_2(tiny_llama_dir, tmp_path, capsys):
    argv = ["export", "--format", "onnx", "--for", "generation", "--max-length", "4096"]
    assert main([*argv, "--lengths", "8", str(tiny_llama_dir), str(tmp_path)]) == 2
    assert "max_position_embeddings" in capsys.readouterr().err
