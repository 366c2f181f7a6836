"""The prefill and decode wrappers compute the model's logits and keep the GQA cache small."""

import pytest
import torch
from kd_convert.errors import ValidationError
from kd_convert.stateful import (
    DecodeWrapper,
    PrefillWrapper,
    cache_layout,
    cached_causal_mask,
    check_cache_length,
    past_names,
    present_names,
)
from kd_convert.wrapper import load_student


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return load_student(tiny_llama_dir)


def _ids(n):
    return torch.arange(5, 5 + n, dtype=torch.int32)[None, :]


def test_prefill_then_decode_gives_the_models_logits(model):
    ids = _ids(6)
    with torch.no_grad():
        reference = model(ids.long()).logits
        logits, *cache = PrefillWrapper(model)(ids[:, :5], torch.ones_like(ids[:, :5]), _pos(5))
        step, *_ = DecodeWrapper(model)(
            ids[:, 5:], torch.ones_like(ids), torch.tensor([[5]], dtype=torch.int32), *cache
        )
    assert torch.allclose(logits, reference[:, :5], atol=1e-5)
    assert torch.allclose(step[:, 0], reference[:, 5], atol=1e-5)


def _pos(n):
    return torch.arange(n, dtype=torch.int32)[None, :]


def test_a_gqa_student_keeps_its_smaller_cache(model):
    config = model.config
    with torch.no_grad():
        _, *cache = PrefillWrapper(model)(_ids(4), torch.ones_like(_ids(4)), _pos(4))
    assert config.num_key_value_heads < config.num_attention_heads
    assert len(cache) == 2 * config.num_hidden_layers
    head_dim = config.hidden_size // config.num_attention_heads
    assert {tuple(t.shape) for t in cache} == {(1, config.num_key_value_heads, 4, head_dim)}


def test_decode_after_a_padded_prefill_ignores_the_padding(model):
    ids = _ids(4)
    padded = torch.cat([ids, torch.full((1, 3), 3, dtype=torch.int32)], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]], dtype=torch.int32)
    with torch.no_grad():
        reference = model(torch.cat([ids, _ids(1)], dim=1).long()).logits[:, -1]
        _, *cache = PrefillWrapper(model)(padded, mask, _pos(7))
        step, *_ = DecodeWrapper(model)(
            _ids(1),
            torch.cat([mask, torch.ones(1, 1, dtype=torch.int32)], dim=1),
            torch.tensor([[4]], dtype=torch.int32),
            *cache,
        )
    assert torch.allclose(step[:, 0], reference, atol=1e-5)


def test_cached_mask_lets_each_query_see_the_cache_and_earlier_new_keys():
    mask = cached_causal_mask(torch.ones(1, 5, dtype=torch.int32), 2, torch.float32)
    assert (mask[0, 0] == 0).int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_cache_layout_records_layers_kv_heads_head_dim_and_bytes(model):
    layout = cache_layout(model, 128)
    assert (layout.layers, layout.kv_heads, layout.head_dim) == (2, 2, 8)
    assert layout.to_json()["bytes_per_token"] == 2 * 2 * 2 * 8 * 4
    assert layout.max_length == 128


def test_optimum_names():
    assert past_names(2)[2:] == ["past_key_values.1.key", "past_key_values.1.value"]
    assert present_names(2)[-1] == "present.1.value"


def test_inputs_beyond_the_cache_are_refused_naming_the_limit():
    with pytest.raises(ValidationError, match="exceed the cache's maximum length 64"):
        check_cache_length(70, 64)


def test_the_stateful_core_ml_wrapper_generates_the_references_ids(model):
    from kd_convert.generate import Stepper, generate, reference_stepper
    from kd_convert.stateful import StatefulWrapper

    wrapper = StatefulWrapper(model, cache_layout(model, 64))

    def run(*arrays):  # the buffers are the cache: nothing to pass between steps
        with torch.no_grad():
            return [wrapper(*(torch.from_numpy(a) for a in arrays[:3])).numpy(), None]

    stateful = generate(Stepper(run, run, 64), [1, 5, 9], 24, stop_at_eos=False)
    reference = generate(reference_stepper(model, 64), [1, 5, 9], 24, stop_at_eos=False)
    assert stateful.tokens == reference.tokens
