import json
import shutil

import pytest
import torch
from kd_train.errors import KDTrainError
from kd_train.teachers.base import Teacher
from kd_train.teachers.fingerprint import weights_fingerprint
from kd_train.teachers.hf import HFTeacher, TeacherLoadError
from transformers import AutoModelForCausalLM


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return HFTeacher.from_pretrained(tiny_teacher_dir)


@pytest.fixture
def batch():
    ids = torch.tensor([[5, 9, 40, 77, 120, 6], [8, 8, 33, 2, 250, 19]])
    return ids, torch.ones_like(ids)


def test_hf_teacher_is_a_teacher(teacher):
    assert isinstance(teacher, Teacher)
    assert teacher.vocab_size == 320


def test_log_probs_equal_log_softmax_of_the_model_logits(teacher, tiny_teacher_dir, batch):
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    with torch.no_grad():
        expected = torch.log_softmax(model(input_ids=batch[0]).logits.float(), dim=-1)
    got = teacher.log_probs(*batch)
    assert got.dtype == torch.float32
    assert got.shape == (2, 6, 320)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_topk_is_the_sorted_top_of_the_full_log_probs(teacher, batch):
    full = teacher.log_probs(*batch)
    top = teacher.topk(*batch, k=5)
    expected_values, expected_ids = torch.topk(full, 5, dim=-1)
    assert torch.equal(top.ids, expected_ids)
    torch.testing.assert_close(top.logprobs, expected_values, rtol=0, atol=0)
    assert bool((top.logprobs[..., :-1] >= top.logprobs[..., 1:]).all())


def test_topk_probabilities_sum_to_at_most_one(teacher, batch):
    top = teacher.topk(*batch, k=50)
    assert bool((top.logprobs.exp().sum(-1) <= 1 + 1e-6).all())
    everything = teacher.topk(*batch, k=teacher.vocab_size)
    torch.testing.assert_close(
        everything.logprobs.exp().sum(-1), torch.ones(2, 6), rtol=0, atol=1e-5
    )


def test_outputs_carry_no_gradient_and_the_model_is_in_eval_mode(teacher, batch):
    assert not teacher.model.training
    assert not teacher.logits(*batch).requires_grad
    assert not teacher.topk(*batch, k=3).logprobs.requires_grad


def test_right_padding_leaves_real_positions_unchanged(teacher):
    short = torch.tensor([[5, 9, 40]])
    padded = torch.tensor([[5, 9, 40, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    alone = teacher.log_probs(short, torch.ones_like(short))
    in_batch = teacher.log_probs(padded, mask)[:, :3]
    torch.testing.assert_close(in_batch, alone, rtol=0, atol=1e-5)


def test_bfloat16_teacher_runs_and_returns_float32_log_probs(tiny_teacher_dir, teacher, batch):
    bf16 = HFTeacher.from_pretrained(tiny_teacher_dir, dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    got = bf16.log_probs(*batch)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(2, 6), rtol=0, atol=1e-5)
    # bf16 weights keep ~3 significant digits: close to the fp32 teacher, not equal.
    assert float((got - teacher.log_probs(*batch)).abs().max()) < 0.1


def test_fingerprint_is_the_sha256_of_the_weight_files(teacher, tiny_teacher_dir):
    assert teacher.fingerprint == weights_fingerprint(tiny_teacher_dir)


def test_in_memory_teacher_has_no_fingerprint(teacher):
    with pytest.raises(KDTrainError, match="in-memory"):
        _ = HFTeacher(teacher.model).fingerprint


def test_missing_path_is_refused_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TeacherLoadError, match="nope does not exist"):
        HFTeacher.from_pretrained(missing)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(TeacherLoadError, match=r"no config\.json"):
        HFTeacher.from_pretrained(tmp_path)


def test_model_that_is_not_a_causal_lm_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(TeacherLoadError, match="causal language model"):
        HFTeacher.from_pretrained(tmp_path)


def test_code_shipped_with_a_model_is_not_run_by_default(tmp_path, tiny_teacher_dir):
    shutil.copytree(tiny_teacher_dir, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "remote-code-ran"
    (tmp_path / "m" / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    loaded = HFTeacher.from_pretrained(tmp_path / "m")
    assert not marker.exists()
    assert type(loaded.model).__name__ == "LlamaForCausalLM"


def test_unknown_dtype_is_refused(tiny_teacher_dir):
    with pytest.raises(TeacherLoadError, match="unknown teacher dtype 'int8'"):
        HFTeacher.from_pretrained(tiny_teacher_dir, dtype="int8")


@pytest.mark.parametrize("k", [0, 321])
def test_k_outside_the_vocabulary_is_refused(teacher, batch, k):
    with pytest.raises(KDTrainError, match=f"got k={k}"):
        teacher.topk(*batch, k=k)


def test_batch_of_mismatched_shapes_is_refused(teacher):
    with pytest.raises(KDTrainError, match=r"same shape \[B, T\]"):
        teacher.logits(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))


def test_the_training_call_gives_hidden_states_and_head_that_rebuild_the_logits(
    tiny_teacher_dir,
):
    from kd_train.data import collate
    from kd_train.data.tokenization import Example

    teacher = HFTeacher.from_pretrained(tiny_teacher_dir, layers=True)
    ids = torch.tensor([5, 6, 7, 8])
    batch = collate([Example("x", ids, ids.clone(), {})], pad_token_id=0)
    out = teacher(batch)
    assert out.hidden is not None
    assert out.head_weight is not None
    assert len(out.layers) == teacher.model.config.num_hidden_layers + 1
    rebuilt = out.hidden @ out.head_weight.T
    torch.testing.assert_close(rebuilt, teacher.logits(batch.input_ids, batch.attention_mask))


def test_the_training_call_with_k_serves_topk_with_tail_and_layers(tiny_teacher_dir):
    from kd_train.data import collate
    from kd_train.data.tokenization import Example

    teacher = HFTeacher.from_pretrained(tiny_teacher_dir, k=4, layers=True)
    ids = torch.tensor([5, 6, 7])
    out = teacher(collate([Example("x", ids, ids.clone(), {})], pad_token_id=0))
    assert out.ids is not None
    assert out.ids.shape == (1, 3, 4)
    assert out.tail is not None
    assert out.layers


def test_a_model_that_scales_its_logits_is_served_dense(tiny_teacher_dir):
    from kd_train.data import collate
    from kd_train.data.tokenization import Example

    teacher = HFTeacher.from_pretrained(tiny_teacher_dir, layers=True)
    original = teacher.model.forward

    def scaled(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out

    teacher.model.forward = scaled
    ids = torch.tensor([5, 6, 7])
    out = teacher(collate([Example("x", ids, ids.clone(), {})], pad_token_id=0))
    assert out.hidden is None
    assert out.logits is not None
    assert out.layers
