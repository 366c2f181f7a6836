import pytest
import torch
from kd_convert.errors import UnsupportedModelError
from kd_convert.wrapper import MASK_VALUE, ExportWrapper, additive_causal_mask, load_student
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM


@pytest.fixture(scope="module")
def student(tiny_llama_dir):
    return load_student(tiny_llama_dir)


def test_mask_is_zero_on_causal_real_keys_and_mask_value_elsewhere():
    mask = additive_causal_mask(torch.tensor([[1, 1, 1, 0]], dtype=torch.int32), torch.float32)
    expected_allowed = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool
    )
    assert mask.shape == (1, 1, 4, 4)
    assert torch.equal(mask[0, 0] == 0, expected_allowed)
    assert torch.all(mask[0, 0][~expected_allowed] == MASK_VALUE)


def test_mask_value_is_finite_in_fp16():
    mask = additive_causal_mask(torch.tensor([[1, 0]], dtype=torch.int32), torch.float16)
    assert torch.isfinite(mask).all()


def test_wrapper_matches_the_unmodified_model_on_real_tokens(student):
    ids = torch.randint(4, student.config.vocab_size, (2, 12), dtype=torch.int32)
    mask = torch.ones(2, 12, dtype=torch.int32)
    mask[1, 9:] = 0
    with torch.no_grad():
        logits = ExportWrapper(student)(ids, mask)
        full = student(input_ids=ids[:1].long()).logits
        short = student(input_ids=ids[1:, :9].long()).logits
    torch.testing.assert_close(logits[:1], full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1:, :9], short, atol=1e-5, rtol=1e-5)


def test_wrapper_drives_a_gqa_qwen2_model_too():
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    ids = torch.randint(0, 64, (1, 10), dtype=torch.int32)
    with torch.no_grad():
        logits = ExportWrapper(model)(ids, torch.ones_like(ids))
        reference = model(input_ids=ids.long()).logits
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


def test_a_model_without_the_decoder_layout_is_rejected():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Linear(2, 2)
            self.lm_head = nn.Linear(2, 2)

    with pytest.raises(UnsupportedModelError, match=r"Encoder is not a decoder-only.*embed_tokens"):
        ExportWrapper(Encoder())  # type: ignore[arg-type]


def test_sliding_window_models_are_rejected():
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=0,
    )
    with pytest.raises(UnsupportedModelError, match="sliding-window"):
        ExportWrapper(Qwen2ForCausalLM(config))


def test_flash_style_attention_implementations_are_rejected(student):
    student.config._attn_implementation = "flex_attention"
    try:
        with pytest.raises(UnsupportedModelError, match="attn_implementation='eager'"):
            ExportWrapper(student)
    finally:
        student.config._attn_implementation = "eager"


def test_loading_a_directory_without_config_says_what_to_pass(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"no config.json.*save_pretrained"):
        load_student(tmp_path)


def test_loading_a_broken_config_is_an_unsupported_model(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model"}', encoding="utf-8")
    with pytest.raises(UnsupportedModelError, match="cannot load a causal LM"):
        load_student(tmp_path)
