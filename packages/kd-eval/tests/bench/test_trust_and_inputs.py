"""``kd-eval bench`` opens an artifact without running its code, and checks every input.

Payloads are planted in the pickled formats (TorchScript ``data.pkl``, a ``torch.export``
weight marked ``use_pickle``): ``bench`` exits 2 with one line and the marker never appears,
with or without ``--trust-artifact``. An exported file with a ``contract.json`` beside it is
checked against the contract: wrong dtype, wrong rank, too long, zero length and a batch
over the fixed batch are refused before the runtime sees them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from kd_eval.bench.measure import BenchSettings, bench_runner
from kd_eval.bench.runners import ONNXRunner, TorchScriptRunner, open_runner
from kd_eval.cli import main
from kd_eval.errors import BenchError

FAST = ["--seq-lens", "4", "--new-tokens", "1", "--warmup", "0", "--repeats", "3"]
FAST += ["--no-progress"]


class Payload:
    """Unpickling this writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def rewrite(path: Path, change) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [(n, change(n, archive.read(n))) for n in archive.namelist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory, tiny_lm) -> Path:
    """:class:`TinyLM` saved with ``torch.export`` (static ``[1, 4]`` int32 inputs)."""
    ids = torch.arange(1, 5, dtype=torch.int32)[None]
    program = torch.export.export(tiny_lm().eval(), (ids, torch.ones_like(ids)))
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    torch.export.save(program, path)
    return path


def one_line_exit_2(argv, capsys) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


def plant_script(src: Path, tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "planted.pt"
    shutil.copy(src, path)
    rewrite(path, lambda n, d: pickle.dumps(Payload(marker), 2) if n.endswith("data.pkl") else d)
    return path


def plant_pt2(src: Path, tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "planted.pt2"
    shutil.copy(src, path)

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            return json.dumps(config).encode()
        if "/data/weights/weight_" in name:
            return pickle.dumps(Payload(marker), 2)
        return data

    rewrite(path, change)
    return path


@pytest.mark.parametrize("plant", [plant_script, plant_pt2])
@pytest.mark.parametrize("trust", [[], ["--trust-artifact"]])
def test_bench_never_runs_a_planted_payload(
    plant, trust, tiny_torchscript, tiny_pt2, tmp_path, capsys
):
    marker = tmp_path / "ran"
    src = tiny_torchscript if plant is plant_script else tiny_pt2
    path = plant(src, tmp_path, marker)
    err = one_line_exit_2(["bench", str(path), *FAST, *trust], capsys)
    assert "--trust-artifact" in err
    assert "imports __builtin__.exec" in err or "use_pickle" in err
    assert not marker.exists()


@pytest.mark.parametrize("fixture", ["tiny_torchscript", "tiny_pt2"])
def test_a_genuine_pickled_file_benches_only_with_trust(fixture, request, capsys):
    path = request.getfixturevalue(fixture)
    err = one_line_exit_2(["bench", str(path), *FAST], capsys)
    assert f"{path} is a " in err
    assert "pass --trust-artifact" in err
    assert main(["bench", str(path), *FAST, "--trust-artifact"]) == 0


def test_onnx_needs_no_trust(tiny_onnx):
    assert main(["bench", str(tiny_onnx), *FAST]) == 0


@pytest.fixture
def onnx_export(tiny_onnx, tmp_path) -> Path:
    """``tiny.onnx`` in a directory with the contract of a 4- and 8-token export (batch 1)."""
    out = tmp_path / "export"
    out.mkdir()
    shutil.copy(tiny_onnx, out / "tiny.onnx")
    shutil.copy(f"{tiny_onnx}.data", out / "tiny.onnx.data")  # the weights, external data
    shapes = [[1, 4], [1, 8]]
    contract = {
        "format": "onnx",
        "artifact": "tiny.onnx",
        "inputs": [
            {"name": "input_ids", "dtype": "int32", "shapes": shapes},
            {"name": "attention_mask", "dtype": "int32", "shapes": shapes},
        ],
        "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()},
    }
    (out / "contract.json").write_text(json.dumps(contract))
    return out


BAD = {
    "too long": (torch.zeros((1, 600), dtype=torch.long), "has length 600 on axis 1"),
    "zero length": (torch.zeros((1, 0), dtype=torch.long), "an empty axis"),
    "wrong rank": (torch.zeros(4, dtype=torch.long), "has 1 dimensions (4,)"),
    "batch over the fixed batch": (torch.zeros((2, 4), dtype=torch.long), "fixes it at 1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_an_input_the_contract_refuses_never_reaches_onnxruntime(onnx_export, case):
    runner = open_runner(onnx_export)
    calls = []
    runner.run = lambda feeds: calls.append(feeds)
    ids, message = BAD[case]
    with pytest.raises(BenchError, match=r"tiny\.onnx: input 'input_ids' ") as caught:
        runner.logits(ids)
    assert message in str(caught.value)
    assert calls == []


def test_a_wrong_dtype_is_refused(tiny_torchscript, onnx_export, tmp_path):
    shutil.copy(tiny_torchscript, onnx_export / "tiny.pt")
    contract = json.loads((onnx_export / "contract.json").read_text())
    contract["artifact"] = "tiny.pt"
    contract["files"]["tiny.pt"] = hashlib.sha256(tiny_torchscript.read_bytes()).hexdigest()
    (onnx_export / "contract.json").write_text(json.dumps(contract))
    specs = open_runner(onnx_export, trust_artifact=True).specs
    with pytest.raises(BenchError, match="has dtype int64; the export takes int32"):
        TorchScriptRunner(onnx_export / "tiny.pt", torch.int64, trust_artifact=True, specs=specs)


def test_bench_refuses_a_configuration_before_measuring_any(onnx_export, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", str(onnx_export), "--seq-lens", "4,600", "--out", str(out), *FAST[2:]]
    err = one_line_exit_2(argv, capsys)
    assert "has length 600 on axis 1; the export accepts only 4, 8" in err
    assert not out.exists()


def test_bench_refuses_decoding_past_the_enumerated_lengths(onnx_export, capsys):
    argv = ["bench", str(onnx_export / "tiny.onnx"), "--seq-lens", "8", "--new-tokens", "2"]
    assert "has length 9 on axis 1" in one_line_exit_2([*argv, *FAST[4:]], capsys)


def test_bench_of_an_export_directory_runs_its_enumerated_lengths(onnx_export):
    settings = BenchSettings(seq_lens=(4, 8), new_tokens=1, warmup=0, repeats=3)
    result = bench_runner(open_runner(onnx_export), settings).to_dict()
    assert [c["seq_len"] for c in result["configs"]] == [4, 8]


def test_a_file_that_does_not_hash_as_its_contract_says_is_refused(onnx_export):
    contract = json.loads((onnx_export / "contract.json").read_text())
    contract["files"]["tiny.onnx"] = "0" * 64
    (onnx_export / "contract.json").write_text(json.dumps(contract))
    with pytest.raises(BenchError, match=r"contract\.json says 000000000000\.\.\."):
        open_runner(onnx_export / "tiny.onnx")


def test_a_missing_external_data_file_is_refused(onnx_export):
    (onnx_export / "tiny.onnx.data").unlink()
    with pytest.raises(BenchError, match=r"tiny\.onnx\.data is missing"):
        open_runner(onnx_export)


def test_a_torch_export_file_without_contract_is_checked_against_its_own_inputs(tiny_pt2):
    runner = open_runner(tiny_pt2, trust_artifact=True)
    with pytest.raises(BenchError, match="has 5 on axis 1; the export fixes it at 4"):
        runner.logits(torch.zeros((1, 5), dtype=torch.long))


def test_a_contract_that_does_not_list_the_file_is_refused(onnx_export):
    shutil.copy(onnx_export / "tiny.onnx", onnx_export / "other.onnx")
    with pytest.raises(BenchError, match=r"does not describe other\.onnx"):
        open_runner(onnx_export / "other.onnx")


def test_a_prefill_graph_is_explained(tmp_path, tiny_lm, onnx_exporter):
    class Prefill(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = tiny_lm()

        def forward(self, input_ids, attention_mask, position_ids):
            return self.lm(input_ids, attention_mask + 0 * position_ids)

    path = tmp_path / "prefill.onnx"
    ids = torch.arange(1, 5, dtype=torch.int32)[None]
    torch.onnx.export(
        Prefill().eval(),
        (ids, torch.ones_like(ids), torch.arange(4, dtype=torch.int32)[None]),
        str(path),
        dynamo=True,
        input_names=["input_ids", "attention_mask", "position_ids"],
        output_names=["logits"],
    )
    with pytest.raises(BenchError, match=r"also takes \['position_ids'\]"):
        ONNXRunner(path)


def test_a_transformers_model_refuses_positions_beyond_its_context(tiny_llama_dir, capsys):
    argv = ["bench", str(tiny_llama_dir), "--seq-lens", "600", *FAST[2:]]
    err = one_line_exit_2(argv, capsys)
    assert "600 prompt tokens and 1 new tokens feeds 600 positions" in err
    assert "max_position_embeddings (512)" in err


def test_feeds_keep_the_onnx_sessions_dtypes(tiny_onnx):
    feeds = ONNXRunner(tiny_onnx).feeds(torch.zeros((1, 3), dtype=torch.long))
    assert [f.dtype for f in feeds] == [np.int32, np.int32]


@pytest.mark.parametrize("case", ["zero length", "wrong rank"])
def test_a_bare_onnx_file_is_checked_against_its_own_graph(tiny_onnx, case):
    runner = ONNXRunner(tiny_onnx)
    calls = []
    runner.run = lambda feeds: calls.append(feeds)
    ids, message = BAD[case]
    with pytest.raises(BenchError, match=r"tiny\.onnx: input 'input_ids' ") as caught:
        runner.logits(ids)
    assert message in str(caught.value)
    assert calls == []


def test_an_onnxruntime_refusal_is_a_bench_error(tiny_onnx):
    runner = ONNXRunner(tiny_onnx)
    with pytest.raises(BenchError, match=r"refused inputs of shapes \[\(1, 4\), \(1, 4\)\]"):
        runner.run([np.zeros((1, 4), np.float32), np.ones((1, 4), np.float32)])
