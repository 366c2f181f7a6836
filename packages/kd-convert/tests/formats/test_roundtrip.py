"""Each format round-trips the tiny GQA Llama with parity inside its threshold."""

import sys

import numpy as np
import pytest
from kd_convert.contract import verify
from kd_convert.formats import coreml
from kd_convert.formats.base import RuntimeUnavailableError
from kd_convert.parity import THRESHOLDS

TORCH_FORMATS = ["torchscript", "exported", "onnx"]
# One xdist worker owns the session exports, so each format is exported once.
pytestmark = pytest.mark.xdist_group("kd-convert-exports")


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_export_matches_the_reference_within_its_threshold(export_once, fmt):
    report = export_once(fmt).parity
    assert report.status == "passed"
    assert [r.length for r in report.results] == [8, 16]
    for case in report.results:
        assert case.n_real < case.length  # every golden case carries padding
        assert case.cosine >= THRESHOLDS[fmt].cosine
        assert case.max_abs <= THRESHOLDS[fmt].max_abs


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
def test_export_holds_its_contract(export_once, fmt):
    assert verify(export_once(fmt).out_dir, trust_artifact=True).format == fmt


def test_onnx_contract_records_the_opset(export_once):
    assert export_once("onnx").contract.opset == 18


def test_onnx_inputs_are_int32_with_a_dynamic_sequence_axis(export_once):
    from kd_convert.formats import onnx

    signature = onnx.describe(export_once("onnx").artifact)
    assert [(t.name, t.dtype, t.shapes) for t in signature.inputs] == [
        ("input_ids", "int32", [[1, None]]),
        ("attention_mask", "int32", [[1, None]]),
    ]


def test_coreml_package_declares_int32_inputs_with_enumerated_shapes(export_once):
    signature = coreml.describe(export_once("coreml").artifact)
    assert [(t.name, t.dtype, t.shapes) for t in signature.inputs] == [
        ("input_ids", "int32", [[1, 8], [1, 16]]),
        ("attention_mask", "int32", [[1, 8], [1, 16]]),
    ]
    assert [(t.name, t.dtype) for t in signature.outputs] == [("logits", "float32")]


def test_coreml_export_holds_its_contract(export_once):
    assert verify(export_once("coreml").out_dir).format == "coreml"


def test_coreml_parity_runs_on_macos_and_is_reported_as_needing_it_elsewhere(export_once):
    report = export_once("coreml").parity
    if sys.platform == "darwin":  # the macOS CI job: real Core ML prediction
        assert report.status == "passed"
        assert all(r.cosine >= THRESHOLDS["coreml"].cosine for r in report.results)
    else:
        assert report.status == "needs macOS"
        assert report.results == []
        assert "needs macOS" in report.note


def test_coreml_runner_exists_only_on_macos(export_once):
    artifact = export_once("coreml").artifact
    if sys.platform == "darwin":
        ids = np.ones((1, 8), dtype=np.int32)
        assert coreml.load_runner(artifact)(ids, ids).shape[:2] == (1, 8)
    else:
        with pytest.raises(RuntimeUnavailableError, match="needs macOS"):
            coreml.load_runner(artifact)


def test_torchscript_runs_every_enumerated_length_from_one_trace(export_once):
    from kd_convert.formats import torchscript

    run = torchscript.load_runner(export_once("torchscript").artifact, trust_artifact=True)
    for length in (8, 16):
        ids = np.ones((1, length), dtype=np.int32)
        assert run(ids, ids).shape[:2] == (1, length)
