import numpy as np
import pytest
from kd_convert.parity import check_parity, compare, golden_cases, threshold_for
from kd_convert.spec import ExportSpec
from kd_convert.wrapper import load_student


def test_golden_cases_are_padded_int32_and_reproducible():
    spec = ExportSpec("onnx", (8, 16))
    first, again = golden_cases(spec, 50, pad_id=3), golden_cases(spec, 50, pad_id=3)
    case = first[1]
    assert case.input_ids.dtype == np.int32
    assert case.attention_mask.dtype == np.int32
    assert case.attention_mask[0].tolist() == [1] * 12 + [0] * 4
    assert (case.input_ids[0, 12:] == 3).all()
    assert np.array_equal(case.input_ids, again[1].input_ids)


def test_compare_reports_worst_position_cosine_and_max_abs():
    ref = np.array([[1.0, 0.0], [1.0, 1.0]])
    out = np.array([[1.0, 0.0], [1.0, -1.0]])
    cosine, max_abs = compare(ref, out)
    assert cosine == pytest.approx(0.0)
    assert max_abs == pytest.approx(2.0)


def test_thresholds_are_looser_for_fp16_and_int8_core_ml():
    assert threshold_for(ExportSpec("onnx")).max_abs < threshold_for(ExportSpec("coreml")).max_abs
    assert threshold_for(ExportSpec("coreml", quantize="int8")).cosine < 0.999


def test_a_runner_that_drifts_fails_parity(tiny_llama_dir):
    model = load_student(tiny_llama_dir)
    spec = ExportSpec("onnx", (8,))
    cases = golden_cases(spec, model.config.vocab_size, pad_id=3)

    def noisy(input_ids, attention_mask):
        ids = input_ids[:, : cases[0].n_real].astype(np.int64)
        import torch

        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(ids)).logits.numpy()
        return np.concatenate([logits + 0.01, np.zeros((1, 2, logits.shape[-1]))], axis=1)

    report = check_parity(model, noisy, spec, cases)
    assert report.status == "failed"
    assert report.results[0].max_abs == pytest.approx(0.01, rel=1e-3)
