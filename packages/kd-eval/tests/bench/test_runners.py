import numpy as np
import onnxruntime as ort
import pytest
import torch
from kd_eval.bench.measure import BenchSettings, bench_runner
from kd_eval.bench.runners import HFRunner, ONNXRunner, TorchScriptRunner, open_runner
from kd_eval.errors import BenchError


def _greedy(runner, ids, steps):
    token, state = runner.prefill(ids)
    tokens = [token]
    for _ in range(steps - 1):
        token, state = runner.decode(token, state)
        tokens.append(token)
    return torch.stack(tokens, 1)


def test_hf_runner_decodes_like_generate(tiny_llama_dir):
    runner = HFRunner(tiny_llama_dir)
    ids = torch.randint(4, 300, (2, 6), generator=torch.Generator().manual_seed(0))
    out = runner.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=3,
    )
    assert _greedy(runner, ids, 4).tolist() == out[:, 6:].tolist()


def test_onnx_runner_discovers_int32_inputs_and_the_logits_output(tiny_onnx):
    runner = ONNXRunner(tiny_onnx)
    assert runner.inputs == {"input_ids": np.int32, "attention_mask": np.int32}
    assert runner.output == "logits"
    assert runner.vocab_size == 50


def test_onnx_runner_matches_the_pytorch_module(tiny_onnx, tiny_lm):
    ids = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tiny_lm().eval()(ids.int(), torch.ones_like(ids).int())
    got = ONNXRunner(tiny_onnx).logits(ids)
    assert torch.allclose(got, expected, atol=1e-5)


def test_exported_runners_decode_by_recomputing_the_whole_sequence(
    tiny_onnx, tiny_torchscript, tiny_lm
):
    ids = torch.randint(0, 50, (1, 4), generator=torch.Generator().manual_seed(2))
    onnx_tokens = _greedy(ONNXRunner(tiny_onnx), ids, 3)
    ts_tokens = _greedy(TorchScriptRunner(tiny_torchscript, trust_artifact=True), ids, 3)
    seq = ids
    module = tiny_lm().eval()
    for _ in range(3):
        with torch.no_grad():
            nxt = module(seq.int(), torch.ones_like(seq).int())[:, -1].argmax(-1)
        seq = torch.cat([seq, nxt[:, None]], 1)
    assert onnx_tokens.tolist() == ts_tokens.tolist() == seq[:, 4:].tolist()


def test_bench_of_an_onnx_file_reports_its_kind(tiny_onnx):
    settings = BenchSettings(seq_lens=(4,), batch_sizes=(1,), new_tokens=2, warmup=1, repeats=3)
    result = bench_runner(open_runner(tiny_onnx), settings).to_dict()
    assert result["kind"] == "onnx"
    assert result["parameters"] is None
    assert result["configs"][0]["latency_ms"]["n"] == 3


def test_torchscript_runner_counts_parameters(tiny_torchscript):
    assert (
        TorchScriptRunner(tiny_torchscript, trust_artifact=True).parameters == 50 * 8 + 8 * 50 + 50
    )


def test_onnx_model_without_input_ids_is_explained(tmp_path, tiny_lm, onnx_exporter):
    path = onnx_exporter(tiny_lm().eval(), tmp_path / "bad.onnx", ["tokens", "mask"])
    with pytest.raises(BenchError, match=r"inputs \['mask', 'tokens'\] but no 'input_ids'"):
        ONNXRunner(path)


def test_a_file_that_is_not_onnx_is_explained(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(BenchError, match="cannot load ONNX model"):
        ONNXRunner(path)


def test_missing_or_unknown_model_paths_are_explained(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        open_runner(tmp_path / "gone.onnx")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(BenchError, match=r"unknown model file type '\.bin'"):
        open_runner(tmp_path / "model.bin")


def test_onnxruntime_sees_int32_inputs(tiny_onnx):
    session = ort.InferenceSession(str(tiny_onnx))
    assert {i.type for i in session.get_inputs()} == {"tensor(int32)"}
