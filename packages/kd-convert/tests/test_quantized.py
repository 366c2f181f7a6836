"""QAT students export with the integer weights and scales torchao trained them with."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from kd_convert.contract import read_contract, verify
from kd_convert.errors import ContractError, ExportConfigError
from kd_convert.pipeline import export_model
from kd_convert.quantized import QuantizedLinear, fake_quantize_per_token, load_qat_student
from kd_convert.spec import ExportSpec
from kd_convert.wrapper import ExportWrapper, load_student
from kd_train.trainer.qat import (
    QUANTIZATION_FILE,
    QuantizationRecordError,
    prepare_qat,
    quantization_record,
    weight_qparams,
    write_quantization,
)
from kd_train.trainer.train_config import QATConfig

pytest.importorskip("torchao", reason="QAT students need the qat extra (torchao)")

LENGTHS = (8, 16)
SCHEMES = {"int8": QATConfig(scheme="int8"), "int4": QATConfig(scheme="int4", group_size=32)}


def save_qat_student(source: Path, out: Path, config: QATConfig) -> Path:
    """A copy of the tiny student with the record a QAT run saves next to its weights."""
    shutil.copytree(source, out)
    model = load_student(out)
    prepare_qat(model, config)
    write_quantization(out, quantization_record(model, config))
    return out


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def qat_export(request, tiny_llama_dir, tmp_path_factory):
    """``(scheme, student_dir, ExportResult)`` of the tiny student as a QAT student, in ONNX."""
    scheme = request.param
    root = tmp_path_factory.mktemp(f"qat-{scheme}")
    student = save_qat_student(tiny_llama_dir, root / "student", SCHEMES[scheme])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(student, root / "onnx", ExportSpec("onnx", LENGTHS))
    return scheme, student, result


def inputs(length: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 300, (1, length), generator=torch.Generator().manual_seed(length))
    return ids.to(torch.int32), torch.ones(1, length, dtype=torch.int32)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_the_export_model_computes_the_fake_quant_models_logits_exactly(
    tiny_llama_dir, tmp_path, scheme
):
    student = save_qat_student(tiny_llama_dir, tmp_path / "s", SCHEMES[scheme])
    loaded = load_qat_student(student)
    assert loaded is not None
    swapped = [m for m in loaded.export_model.modules() if isinstance(m, QuantizedLinear)]
    assert len(swapped) == len(loaded.record.layers) == 14
    with torch.no_grad():
        reference = ExportWrapper(loaded.reference)(*inputs())
        exported = ExportWrapper(loaded.export_model)(*inputs())
        plain = ExportWrapper(load_student(tiny_llama_dir))(*inputs())
    assert torch.equal(exported, reference)
    assert not torch.equal(plain, reference)  # the fake quantization changes the numbers


def test_per_token_fake_quantization_is_torchaos(tiny_llama_dir):
    model = load_student(tiny_llama_dir)
    prepare_qat(model, SCHEMES["int8"])
    quantizer = model.model.layers[0].self_attn.q_proj.activation_fake_quantizer
    x = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(1)) * 3
    assert torch.equal(fake_quantize_per_token(x), quantizer(x))
    assert not torch.equal(fake_quantize_per_token(x), x)


def test_onnx_parity_against_the_fake_quant_model_passes_within_its_threshold(qat_export):
    scheme, _, result = qat_export
    assert result.parity.status == "passed"
    assert (result.parity.threshold.cosine, result.parity.threshold.max_abs) == (0.999, 2e-2)
    contract = read_contract(result.out_dir)
    assert contract.schema_version == 2
    assert contract.quantization is not None
    assert contract.quantization["scheme"] == scheme
    assert contract.quantization["group_size"] == (32 if scheme == "int4" else None)
    verify(result.out_dir)


def test_the_onnx_graph_holds_the_integer_weights_and_the_trained_scales(qat_export):
    _, student, result = qat_export
    loaded = load_qat_student(student)
    assert loaded is not None
    graph = onnx.load(str(result.artifact)).graph
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    dequantized = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert len(dequantized) == len(loaded.record.layers)
    for node in dequantized:
        name = node.input[0].removeprefix("decoder.").removesuffix(".weight_q")
        q, scale = weight_qparams(loaded.reference.get_submodule(f"model.{name}"))
        stored = constants[node.input[0]]
        assert stored.dtype == np.int8
        np.testing.assert_array_equal(stored.reshape(q.shape), q.numpy())
        np.testing.assert_array_equal(constants[node.input[1]], scale.reshape(-1).numpy())


def test_unfused_onnxruntime_reproduces_the_fake_quant_model_to_float_rounding(qat_export):
    _, student, result = qat_export
    loaded = load_qat_student(student)
    assert loaded is not None
    options = onnxruntime.SessionOptions()
    # basic: no fusion of DequantizeLinear + MatMul into quantized kernels
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = onnxruntime.InferenceSession(str(result.artifact), options)
    ids, mask = inputs()
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        reference = ExportWrapper(loaded.reference)(ids, mask).numpy()
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)


def test_coreml_conversion_keeps_the_integer_weights_with_their_scales(tiny_llama_dir, tmp_path):
    coremltools = pytest.importorskip("coremltools")
    student = save_qat_student(tiny_llama_dir, tmp_path / "s", SCHEMES["int4"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(student, tmp_path / "coreml", ExportSpec("coreml", LENGTHS))
    spec = coremltools.utils.load_spec(str(result.artifact))
    ops: list[str] = []

    def walk(block) -> None:
        for op in block.operations:
            ops.append(op.type)
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    assert ops.count("constexpr_blockwise_shift_scale") == 14  # int weights + scales per layer
    assert read_contract(result.out_dir).quantization["scheme"] == "int4"
    if sys.platform == "darwin":  # the macOS CI job: real Core ML prediction
        assert result.parity.status == "passed"
    else:
        assert result.parity.status == "needs macOS"


def test_a_malformed_quantization_record_stops_the_export_naming_the_file(tiny_llama_dir, tmp_path):
    student = save_qat_student(tiny_llama_dir, tmp_path / "s", SCHEMES["int8"])
    record = json.loads((student / QUANTIZATION_FILE).read_text())
    record["layers"] = record["layers"][1:]
    (student / QUANTIZATION_FILE).write_text(json.dumps(record))
    with pytest.raises(QuantizationRecordError, match="layers do not match"):
        export_model(student, tmp_path / "out", ExportSpec("onnx", LENGTHS))
    assert not (tmp_path / "out" / "contract.json").exists()


def test_a_qat_student_refuses_core_ml_int8_compression_and_generation(tiny_llama_dir, tmp_path):
    student = save_qat_student(tiny_llama_dir, tmp_path / "s", SCHEMES["int8"])
    with pytest.raises(ExportConfigError, match="drop --quantize int8"):
        export_model(student, tmp_path / "a", ExportSpec("coreml", LENGTHS, quantize="int8"))
    with pytest.raises(ExportConfigError, match="--for sequence only"):
        export_model(student, tmp_path / "b", ExportSpec("onnx", LENGTHS, task="generation"))


def test_a_float_students_contract_stays_version_1_without_quantization(export_once):
    result = export_once("onnx")
    data = json.loads((result.out_dir / "contract.json").read_text())
    assert data["schema_version"] == 1
    assert "quantization" not in data


def test_an_unknown_qat_scheme_is_refused_by_the_spec():
    with pytest.raises(ExportConfigError, match="unknown QAT scheme 'int2'"):
        ExportSpec("onnx", LENGTHS, qat="int2")


def test_a_contract_of_an_unknown_schema_version_is_refused(export_once, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(export_once("onnx").out_dir, out)
    data = json.loads((out / "contract.json").read_text())
    data["schema_version"] = 3
    (out / "contract.json").write_text(json.dumps(data))
    with pytest.raises(ContractError, match="schema_version 3 is not one this kd-convert reads"):
        read_contract(out)
