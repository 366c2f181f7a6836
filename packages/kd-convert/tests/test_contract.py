import json
import shutil

import pytest
from kd_convert.contract import CONTRACT_FILE, read_contract, verify
from kd_convert.errors import ContractError

pytestmark = pytest.mark.xdist_group("kd-convert-exports")


@pytest.fixture
def onnx_copy(export_once, tmp_path):
    target = tmp_path / "export"
    shutil.copytree(export_once("onnx").out_dir, target)
    return target


def edit_contract(directory, change):
    path = directory / CONTRACT_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_contract_records_fingerprints_and_tools(export_once):
    contract = read_contract(export_once("onnx").out_dir)
    assert contract.tokenizer_fingerprint.startswith("sha256:")
    assert {"config.json", "model.safetensors"} <= set(contract.source_sha256)
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(contract.tools)
    assert contract.inputs[0].shapes == [[1, 8], [1, 16]]
    assert contract.outputs[0].shapes[0][-1] > 0  # vocabulary size


def test_a_tampered_artifact_fails_verify(onnx_copy):
    with (onnx_copy / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ContractError, match=r"model.onnx has SHA-256"):
        verify(onnx_copy)


def test_a_missing_artifact_fails_verify(onnx_copy):
    (onnx_copy / "model.onnx").unlink()
    with pytest.raises(ContractError, match=r"model.onnx is missing"):
        verify(onnx_copy)


def test_an_unlisted_file_fails_verify(onnx_copy):
    (onnx_copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(ContractError, match=r"extra.bin is not in the contract"):
        verify(onnx_copy)


def test_a_contract_promising_other_dtypes_fails_verify(onnx_copy):
    edit_contract(onnx_copy, lambda d: d["inputs"][0].update(dtype="int64"))
    with pytest.raises(ContractError, match="input 'input_ids' has dtype int32, the contract says"):
        verify(onnx_copy)


def test_a_contract_promising_other_shapes_fails_verify(onnx_copy):
    edit_contract(onnx_copy, lambda d: d["inputs"][1].update(shapes=[[2, 8]]))
    with pytest.raises(
        ContractError, match=r"'attention_mask' does not accept shapes \[\[2, 8\]\]"
    ):
        verify(onnx_copy)


def test_a_contract_with_another_opset_fails_verify(onnx_copy):
    edit_contract(onnx_copy, lambda d: d.update(opset=17))
    with pytest.raises(ContractError, match="ONNX opset is 18, the contract says 17"):
        verify(onnx_copy)


def test_a_renamed_input_fails_verify(onnx_copy):
    edit_contract(onnx_copy, lambda d: d["inputs"][0].update(name="tokens"))
    with pytest.raises(ContractError, match="input 'tokens' is named 'input_ids'"):
        verify(onnx_copy)


def test_a_wrong_number_of_outputs_fails_verify(onnx_copy):
    edit_contract(onnx_copy, lambda d: d["outputs"].append(dict(d["outputs"][0])))
    with pytest.raises(ContractError, match="1 outputs found, the contract lists 2"):
        verify(onnx_copy)


def test_an_unreadable_artifact_with_matching_hashes_fails_verify(onnx_copy):
    (onnx_copy / "model.onnx").write_bytes(b"not onnx")
    from kd_convert.fingerprint import sha256_file

    digest = sha256_file(onnx_copy / "model.onnx")
    edit_contract(onnx_copy, lambda d: d["files"].update({"model.onnx": digest}))
    with pytest.raises(ContractError, match="cannot be read as onnx"):
        verify(onnx_copy)


def test_a_directory_without_contract_is_reported(tmp_path):
    with pytest.raises(ContractError, match=r"contract.json does not exist"):
        verify(tmp_path)


def test_a_corrupt_contract_is_reported(tmp_path):
    (tmp_path / CONTRACT_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(ContractError, match="not a valid kd-convert contract"):
        verify(tmp_path)
