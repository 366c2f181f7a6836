import pytest
from kd_convert.cli import main

pytestmark = pytest.mark.xdist_group("kd-convert-exports")


def test_export_prints_a_summary_table_and_verify_accepts_it(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "ts"
    code = main(
        ["export", "--format", "torchscript", str(tiny_llama_dir), str(out), "--lengths", "8"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "parity passed" in printed
    assert "model.ts" in printed
    assert main(["verify", str(out), "--trust-artifact"]) == 0
    assert "matches its contract" in capsys.readouterr().out


def test_verify_of_a_tampered_export_exits_2_with_the_reason(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "ts"
    main(["export", "--format", "torchscript", str(tiny_llama_dir), str(out), "--lengths", "8"])
    (out / "model.ts").write_bytes(b"tampered")
    assert main(["verify", str(out)]) == 2
    assert "model.ts has SHA-256" in capsys.readouterr().err


def test_bad_lengths_exit_2_with_an_example(tiny_llama_dir, tmp_path, capsys):
    code = main(
        ["export", "--format", "onnx", str(tiny_llama_dir), str(tmp_path), "--lengths", "a"]
    )
    assert code == 2
    assert "comma-separated integers, e.g. 64,128,256" in capsys.readouterr().err


def test_lengths_beyond_the_model_context_exit_2(tiny_llama_dir, tmp_path, capsys):
    code = main(
        ["export", "--format", "onnx", str(tiny_llama_dir), str(tmp_path), "--lengths", "4096"]
    )
    assert code == 2
    assert "max_position_embeddings (512)" in capsys.readouterr().err


def test_an_unknown_format_name_is_refused_naming_the_formats():
    from kd_convert.errors import ExportConfigError
    from kd_convert.formats import format_module

    with pytest.raises(ExportConfigError, match="unknown export format 'tflite': choose one of"):
        format_module("tflite")
