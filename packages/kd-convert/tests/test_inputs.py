"""Every exported-model runner checks its inputs against contract.json before the runtime.

Each bad input is planted: wrong dtype, wrong rank, too long (600 on a model with 512
positions, exported at 8 and 16), zero length, a batch over the fixed batch of 1.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from kd_convert.contract import checked_runner, input_specs, open_runner, read_contract
from kd_convert.errors import ContractError, ValidationError

pytestmark = pytest.mark.xdist_group("kd-convert-exports")

BAD = {
    "wrong dtype": (np.ones((1, 8), np.int64), "has dtype int64; the export takes int32"),
    "wrong rank": (np.ones(8, np.int32), "has 1 dimensions (8,); the export takes 2"),
    "too long": (
        np.ones((1, 600), np.int32),
        "has length 600 on axis 1; the export accepts only 8, 16",
    ),
    "zero length": (np.ones((1, 0), np.int32), "has shape (1, 0): an empty axis"),
    "batch over the fixed batch": (
        np.ones((2, 8), np.int32),
        "has 2 on axis 0; the export fixes it",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported"])
def test_a_runner_refuses_a_bad_input_naming_the_artifact(export_once, fmt, case):
    runner = open_runner(export_once(fmt).out_dir, trust_artifact=True)
    array, message = BAD[case]
    with pytest.raises(ValidationError, match=str(export_once(fmt).artifact)) as caught:
        runner(array, array)
    assert f"input 'input_ids' {message}" in str(caught.value)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported"])
def test_a_runner_runs_every_enumerated_length(export_once, fmt):
    runner = open_runner(export_once(fmt).out_dir, trust_artifact=True)
    for length in (8, 16):
        ids = np.ones((1, length), np.int32)
        assert runner(ids, ids).shape == (1, length, 320)


@pytest.mark.parametrize("case", list(BAD))
def test_the_runtime_never_sees_a_refused_input(export_once, case):
    seen = []
    contract = read_contract(export_once("onnx").out_dir)
    runner = checked_runner(lambda *arrays: seen.append(arrays), input_specs(contract), "x")
    array = BAD[case][0]
    with pytest.raises(ValidationError):
        runner(array, array)
    assert seen == []


def test_core_ml_inputs_are_checked_against_its_enumerated_shapes(export_once):
    specs = input_specs(export_once("coreml").contract)
    assert [s.shapes for s in specs] == [((1, 8), (1, 16))] * 2
    seen = []
    runner = checked_runner(lambda *arrays: seen.append(arrays), specs, "model.mlpackage")
    for array, message in BAD.values():
        with pytest.raises(ValidationError, match=re.escape(message)):
            runner(array, array)
    assert seen == []


def test_input_specs_refuse_a_graph_the_contract_does_not_list(export_once):
    contract = read_contract(export_once("onnx").out_dir)
    with pytest.raises(ContractError, match=r"lists no graph in 'decode\.onnx'"):
        input_specs(contract, "decode.onnx")


def test_open_runner_checks_the_hashes_first(export_once, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(export_once("onnx").out_dir, out)
    (out / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ContractError, match=r"model\.onnx has SHA-256"):
        open_runner(out)
