"""Size on disk and onnxruntime latency of an ONNX export (kd_eval.quantization.footprint)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from kd_eval.errors import BenchError, ConfigError
from kd_eval.quantization.footprint import onnx_figures, onnx_size, resolve_onnx
from kd_eval.quantization.run import parse_onnx


@pytest.fixture
def inline_onnx(tiny_onnx, tmp_path) -> Path:
    """The tiny export saved as one file (the exporter keeps its weights in ``.data``)."""
    out = tmp_path / "inline" / "model.onnx"
    out.parent.mkdir()
    onnx.save(onnx.load(str(tiny_onnx)), str(out))
    return out


def test_weight_bytes_are_the_initializers(inline_onnx) -> None:
    graph = onnx.load(str(inline_onnx)).graph
    expected = sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
    assert expected > 0
    size = onnx_size(inline_onnx)
    assert size["weight_bytes"] == expected
    assert size["file_bytes"] == inline_onnx.stat().st_size


def test_external_data_counts_in_the_file_bytes(inline_onnx, tmp_path) -> None:
    out = tmp_path / "external.onnx"
    model = onnx.load(str(inline_onnx))
    onnx.save(model, str(out), save_as_external_data=True, location="weights.bin", size_threshold=0)
    size = onnx_size(out)
    data = (tmp_path / "weights.bin").stat().st_size
    assert data > 0
    assert size["file_bytes"] == out.stat().st_size + data
    assert size["weight_bytes"] == onnx_size(inline_onnx)["weight_bytes"]


def test_latency_is_measured_at_the_asked_length_in_one_thread(tiny_onnx) -> None:
    figures = onnx_figures(tiny_onnx, length=8, runs=4)
    assert figures["latency_ms"] > 0
    assert (figures["runs"], figures["length"], figures["threads"]) == (4, 8, 1)


def test_an_export_directory_resolves_to_its_artifact(inline_onnx) -> None:
    (inline_onnx.parent / "contract.json").write_text(json.dumps({"artifact": "model.onnx"}))
    assert resolve_onnx(inline_onnx.parent, "fp32") == inline_onnx


def test_a_file_that_does_not_match_its_contract_is_not_measured(inline_onnx) -> None:
    contract = {"artifact": "model.onnx", "files": {"model.onnx": "0" * 64}, "inputs": []}
    (inline_onnx.parent / "contract.json").write_text(json.dumps(contract))
    with pytest.raises(BenchError, match="SHA-256"):
        onnx_figures(resolve_onnx(inline_onnx.parent, "ptq"), length=4, runs=1)


@pytest.mark.parametrize(
    ("specs", "have_qat", "message"),
    [
        (["int4=x.onnx"], True, "'int4' is not an arm; use one of fp32, ptq, qat"),
        (["ptq"], True, "expected NAME=PATH"),
        (["qat=x.onnx"], False, "no qat arm without --qat"),
        (["fp32=missing.onnx"], True, "no such file"),
        (["fp32=TINY", "fp32=TINY"], True, "fp32 is given twice"),
        (["fp32=DIR"], True, "without a readable contract.json"),
        (["fp32=TEXT"], True, "not an .onnx file"),
    ],
)
def test_bad_onnx_arguments_are_refused(
    tiny_onnx, tmp_path, specs: list[str], have_qat: bool, message: str
) -> None:
    text = tmp_path / "model.txt"
    text.write_text("x")
    places = {"TINY": str(tiny_onnx), "DIR": str(tmp_path), "TEXT": str(text)}
    resolved = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        resolved.append(f"{name}{sep}{places.get(path, path)}")
    with pytest.raises(ConfigError, match=message):
        parse_onnx(resolved, have_qat)


def test_every_arm_resolves(tiny_onnx) -> None:
    files = parse_onnx([f"{arm}={tiny_onnx}" for arm in ("fp32", "ptq", "qat")], have_qat=True)
    assert files == dict.fromkeys(("fp32", "ptq", "qat"), Path(tiny_onnx))
