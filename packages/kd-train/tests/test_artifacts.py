"""The checks every exported-model runner shares: inputs against the contract, pickle scans."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from kd_train.artifacts import (
    InputSpec,
    archive_problems,
    contract_inputs,
    input_problems,
    pickle_problems,
    untrusted_message,
)

SEQUENCE = [
    InputSpec("input_ids", "int32", ((1, 8), (1, 16))),
    InputSpec("attention_mask", "int32", ((1, 8), (1, 16))),
]
CACHE = [InputSpec("past", "float32", ((1, 2, None, 8),), max_length=96)]


def ids(*shape, dtype=np.int32):
    return np.ones(shape, dtype=dtype)


def test_inputs_the_contract_lists_pass():
    assert input_problems(SEQUENCE, [ids(1, 8), ids(1, 8)]) == []
    assert input_problems(SEQUENCE, [ids(1, 16), ids(1, 16)]) == []
    assert input_problems(CACHE, [ids(1, 2, 96, 8, dtype=np.float32)]) == []


def test_a_wrong_dtype_is_refused():
    [problem] = input_problems(SEQUENCE, [ids(1, 8, dtype=np.int64), ids(1, 8)])
    assert problem == "input 'input_ids' has dtype int64; the export takes int32"


def test_a_torch_tensor_is_judged_by_its_dtype_too():
    assert input_problems(SEQUENCE[:1], [torch.ones(1, 8, dtype=torch.int32)]) == []
    assert "dtype float32" in input_problems(SEQUENCE[:1], [torch.ones(1, 8)])[0]


def test_a_wrong_rank_is_refused():
    [problem] = input_problems(SEQUENCE[:1], [np.ones(8, dtype=np.int32)])
    assert problem == "input 'input_ids' has 1 dimensions (8,); the export takes 2"


def test_a_length_beyond_the_enumerated_ones_is_refused():
    [problem] = input_problems(SEQUENCE[:1], [ids(1, 600)])
    assert "length 600 on axis 1; the export accepts only 8, 16" in problem


def test_a_length_between_enumerated_ones_is_refused():
    assert "accepts only 8, 16" in input_problems(SEQUENCE[:1], [ids(1, 12)])[0]


def test_a_dynamic_axis_beyond_the_positions_is_refused():
    [problem] = input_problems(CACHE, [ids(1, 2, 97, 8, dtype=np.float32)])
    assert "length 97 on axis 2, beyond the 96 positions the export holds" in problem


def test_a_zero_length_is_refused():
    for specs, array in ((SEQUENCE[:1], ids(1, 0)), (CACHE, ids(1, 2, 0, 8, dtype=np.float32))):
        [problem] = input_problems(specs, [array])
        assert "an empty axis" in problem


def test_a_batch_over_a_fixed_batch_is_refused():
    [problem] = input_problems(SEQUENCE[:1], [ids(2, 8)])
    assert problem == "input 'input_ids' has 2 on axis 0; the export fixes it at 1"


def test_too_few_inputs_and_non_arrays_are_refused():
    assert "1 inputs given; the export takes 2" in input_problems(SEQUENCE, [ids(1, 8)])[0]
    assert "is a list, not an array" in input_problems(SEQUENCE[:1], [[1, 2]])[0]


def test_inputs_beyond_the_specs_are_left_alone():
    assert input_problems(SEQUENCE[:1], [ids(1, 8), object()]) == []


def test_contract_inputs_reads_the_graph_of_an_artifact_and_its_cache_bound():
    contract = {
        "artifact": "prefill.onnx",
        "inputs": [],
        "cache": {"max_length": 96},
        "graphs": {
            "decode": {
                "artifact": "decode.onnx",
                "inputs": [{"name": "past", "dtype": "float32", "shapes": [[1, 2, None, 8]]}],
            }
        },
    }
    assert contract_inputs(contract, "decode.onnx") == CACHE
    with pytest.raises(KeyError):
        contract_inputs(contract, "other.onnx")


class Payload:
    def __reduce__(self):
        return (exec, ("raise SystemExit('ran')",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_pickle_scan_names_an_import_at_every_protocol(protocol):
    [problem] = pickle_problems(pickle.dumps(Payload(), protocol=protocol))
    assert problem.endswith(".exec")


def test_a_memoized_module_name_is_still_resolved():
    blob = pickle.dumps([Payload(), Payload(), print], protocol=4)
    assert pickle_problems(blob) == ["imports builtins.exec", "imports builtins.print"]


def test_a_torch_save_of_tensors_passes_the_scan(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert archive_problems(path) == []


def test_a_nested_archive_with_a_payload_is_named(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(Payload(), protocol=2))
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data/sample_inputs/model.pt", inner.getvalue())
        config = {"config": {"w": {"path_name": "weight_0", "use_pickle": True}}}
        archive.writestr("model/data/weights/model_weights_config.json", json.dumps(config))
    problems = archive_problems(path)
    assert any(
        "sample_inputs/model.pt: archive/data.pkl imports __builtin__.exec" in p for p in problems
    )
    assert any("marks 'w' use_pickle" in p for p in problems)


def test_the_refusal_names_the_file_and_the_flag():
    message = untrusted_message("out/model.ts", "TorchScript archive")
    assert message.startswith("out/model.ts is a TorchScript archive")
    assert "--trust-artifact" in message
    assert "trust_artifact=True" in message


class Marked(torch.Tensor):
    """A tensor subclass: unpickling it imports this module, so a scan refuses it."""


def test_torchs_tensor_rebuilders_pass_and_a_subclass_or_bytes_loader_does_not():
    saved = io.BytesIO()
    torch.save({"w": torch.nn.Parameter(torch.ones(2)), "s": torch.Size([2, 3])}, saved)
    assert archive_problems_of(saved) == []
    assert pickle_problems(pickle.dumps(torch.Size([2, 3]), protocol=2)) == []
    subclass = io.BytesIO()
    torch.save(torch.ones(2).as_subclass(Marked), subclass)
    assert archive_problems_of(subclass) == [f"imports {Marked.__module__}.Marked"]
    assert pickle_problems(pickle.dumps(torch.ones(2), protocol=2)) == [
        "imports torch.storage._load_from_bytes",
        "imports _codecs.encode",
    ]


def archive_problems_of(buffer: io.BytesIO) -> list[str]:
    """The pickle problems of the ``data.pkl`` inside a ``torch.save`` archive."""
    with zipfile.ZipFile(buffer) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("data.pkl")]
        return pickle_problems(archive.read(name))
