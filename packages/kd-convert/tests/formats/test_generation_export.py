"""Generation exports (prefill + decode with a KV cache): parity, contract, verify, generate."""

import json
import sys
import warnings

import numpy as np
import pytest
from kd_convert.contract import read_contract, verify
from kd_convert.errors import ContractError, ExportConfigError, ValidationError
from kd_convert.formats.base import RuntimeUnavailableError
from kd_convert.generate import generate, load_stepper, reference_stepper
from kd_convert.pipeline import export_model
from kd_convert.spec import ExportSpec
from kd_convert.stateful import past_names, present_names
from kd_convert.wrapper import load_student

# ONNX and Core ML export in the default run (they carry the coverage of the generation path);
# torch.export's token parity runs ~200 ExportedProgram calls, so it is slow.
FORMATS = ["onnx", pytest.param("exported", marks=pytest.mark.slow)]
MAX_LENGTH = 96
pytestmark = pytest.mark.xdist_group("kd-convert-exports")


@pytest.fixture(scope="module")
def exports(tiny_llama_dir, tmp_path_factory):
    done = {}

    def export(fmt):
        if fmt not in done:
            spec = ExportSpec(fmt, (8, 16), task="generation", max_length=MAX_LENGTH)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = tmp_path_factory.mktemp(f"generation-{fmt}")
                done[fmt] = export_model(tiny_llama_dir, out, spec)
        return done[fmt]

    return export


@pytest.mark.parametrize("fmt", FORMATS)
def test_greedy_ids_match_transformers_for_64_tokens_from_every_prompt(exports, fmt):
    parity = exports(fmt).parity
    assert parity.status == "passed"
    assert parity.tokens.new_tokens == 64
    assert len(parity.tokens.prompts) == 3
    assert all(p.identical and p.first_mismatch is None for p in parity.tokens.prompts)
    assert all(r.passed for r in parity.results)  # golden vectors through the prefill graph


@pytest.mark.parametrize("fmt", FORMATS)
def test_parity_json_records_the_token_check_and_its_tolerance(exports, fmt):
    stored = json.loads((exports(fmt).out_dir / "parity.json").read_text())
    assert stored["tokens"]["new_tokens"] == 64
    assert stored["threshold"]["max_abs"] in (1e-3, 1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_contract_records_the_cache_layout_and_both_graphs(exports, fmt, tiny_llama_dir):
    contract = verify(exports(fmt).out_dir, trust_artifact=True)
    assert contract.task == "generation"
    assert set(contract.graphs) == {"prefill", "decode"}
    assert contract.cache == {
        "layers": 2, "kv_heads": 2, "head_dim": 8, "dtype": "float32",
        "max_length": MAX_LENGTH, "bytes_per_token": 256,
    }  # fmt: skip
    assert contract.special_tokens == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}


def test_onnx_uses_optimums_names_and_cache_shape(exports):
    from kd_convert.formats import onnx

    out = exports("onnx").out_dir
    decode = onnx.describe(out / "decode.onnx")
    names = ["input_ids", "attention_mask", "position_ids", *past_names(2)]
    assert [t.name for t in decode.inputs] == names
    assert [t.name for t in decode.outputs] == ["logits", *present_names(2)]
    assert decode.inputs[3].shapes == [[1, 2, None, 8]]  # kv heads, not attention heads
    assert all(t.dtype == "int32" for t in decode.inputs[:3])


def test_exported_graph_runner_returns_every_output(export_once):
    from kd_convert.formats import exported

    run = exported.load_graph(export_once("exported").artifact, trust_artifact=True)
    ids = np.ones((1, 8), dtype=np.int32)
    assert [out.shape for out in run(ids, ids)] == [(1, 8, 320)]


def test_verify_names_the_tampered_graph(exports, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exports("onnx").out_dir, copy)
    (copy / "decode.onnx").write_bytes(b"tampered")
    with pytest.raises(ContractError, match=r"decode\.onnx has SHA-256"):
        verify(copy)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sampling_from_an_export_draws_the_references_ids(exports, fmt, tiny_llama_dir):
    stepper = load_stepper(exports(fmt).out_dir, threads=1, trust_artifact=True)
    reference = reference_stepper(load_student(tiny_llama_dir), MAX_LENGTH)
    kwargs = {"do_sample": True, "top_p": 0.9, "temperature": 0.8, "seed": 3}
    assert (
        generate(stepper, [1, 9, 10], 24, **kwargs).tokens
        == generate(reference, [1, 9, 10], 24, **kwargs).tokens
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_export_refuses_inputs_beyond_its_cache(exports, fmt):
    stepper = load_stepper(exports(fmt).out_dir, trust_artifact=True)
    with pytest.raises(ValidationError, match=f"maximum length {MAX_LENGTH}"):
        generate(stepper, list(range(4, 40)), 64)


def test_a_sequence_export_is_no_generation_export(export_once):
    with pytest.raises(ContractError, match="--for generation"):
        load_stepper(export_once("onnx").out_dir)


def test_reading_an_old_contract_gives_a_sequence_export(export_once):
    assert read_contract(export_once("onnx").out_dir).task == "sequence"


def test_a_torchscript_generation_export_is_refused():
    with pytest.raises(ExportConfigError, match="--for generation supports exported, onnx, coreml"):
        ExportSpec("torchscript", task="generation")


def test_coreml_generation_is_one_stateful_package_with_an_fp16_gqa_cache(exports):
    from kd_convert.formats import coreml

    result = exports("coreml")
    signature = coreml.describe(result.artifact)
    assert [(t.name, t.dtype, t.shapes) for t in signature.inputs] == [
        (name, "int32", [[1, None]]) for name in ("input_ids", "attention_mask", "position_ids")
    ]
    assert [(t.name, t.dtype, t.shapes) for t in signature.states] == [
        (name, "float16", [[2, 1, 2, MAX_LENGTH, 8]]) for name in ("key_cache", "value_cache")
    ]
    contract = verify(result.out_dir)
    assert list(contract.graphs) == ["stateful"]
    assert contract.cache["dtype"] == "float16"
    assert contract.cache["states"] == ["key_cache", "value_cache"]


def test_coreml_generation_parity_runs_on_macos_and_needs_it_elsewhere(exports):
    parity = exports("coreml").parity
    if sys.platform == "darwin":  # the macOS CI job: real stateful prediction
        assert parity.status == "passed"
        assert all(p.identical for p in parity.tokens.prompts)
    else:
        assert parity.status == "needs macOS"
        assert parity.tokens is None
        with pytest.raises(RuntimeUnavailableError, match="needs macOS"):
            load_stepper(exports("coreml").out_dir)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_stepper_checks_every_call_against_the_contract(exports, fmt):
    stepper = load_stepper(exports(fmt).out_dir, trust_artifact=True)
    ids = np.ones((1, 8), np.int32)
    with pytest.raises(ValidationError, match=r"\(prefill\): input 'input_ids' has dtype int64"):
        stepper.run_prefill(ids.astype(np.int64), ids)
    with pytest.raises(ValidationError, match="has 2 on axis 0; the export fixes it at 1"):
        stepper.run_prefill(np.ones((2, 8), np.int32), np.ones((2, 8), np.int32))
    with pytest.raises(ValidationError, match="an empty axis"):
        stepper.run_prefill(np.ones((1, 0), np.int32), np.ones((1, 0), np.int32))
    _, *past = stepper.run_prefill(ids, ids)
    mask = np.ones((1, 9), np.int32)
    with pytest.raises(ValidationError, match=r"\(decode\): input 'past_key_values.*float16"):
        stepper.run_decode(5, mask, 8, [p.astype(np.float16) for p in past])
    with pytest.raises(ValidationError, match="has 3 dimensions"):
        stepper.run_decode(5, mask, 8, [p[0] for p in past])
    longer = [np.concatenate([p] * 13, axis=2) for p in past]  # 104 cached positions
    with pytest.raises(ValidationError, match=f"beyond the {MAX_LENGTH} positions"):
        stepper.run_decode(5, np.ones((1, 9), np.int32), 8, longer)


def test_a_tampered_generation_export_is_refused_before_its_stepper_loads(exports, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exports("onnx").out_dir, copy)
    (copy / "prefill.onnx").write_bytes(b"tampered")
    with pytest.raises(ContractError, match=r"does not match its contract: .*prefill\.onnx"):
        load_stepper(copy)


def test_a_generation_export_is_no_sequence_runner(exports):
    from kd_convert.contract import open_runner

    with pytest.raises(ContractError, match="holds a 'generation' export: run it with"):
        open_runner(exports("onnx").out_dir)
