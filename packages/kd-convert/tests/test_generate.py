"""The generate loop: greedy token parity with transformers, eos, sampling, the cache limit."""

import numpy as np
import pytest
import torch
from kd_convert.errors import ExportConfigError, ValidationError
from kd_convert.generate import (
    choose,
    encode_prompt,
    eos_ids,
    generate,
    load_stepper,
    reference_stepper,
)
from kd_convert.parity import THRESHOLDS, check_token_parity, parity_prompts
from kd_convert.wrapper import load_student
from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return load_student(tiny_llama_dir)


@pytest.fixture(scope="module")
def stepper(model):
    return reference_stepper(model, 128)


def test_greedy_64_tokens_match_transformers_generate_token_for_token(model, stepper):
    prompt = parity_prompts(model.config.vocab_size, model.config.bos_token_id)[0]
    parity = check_token_parity(model, stepper, THRESHOLDS["exported"], prompts=[prompt])
    assert parity.passed
    assert parity.new_tokens == 64
    assert all(p.identical and p.new_tokens == 64 for p in parity.prompts)
    assert max(p.max_abs for p in parity.prompts) <= THRESHOLDS["exported"].max_abs


def test_generation_stops_at_eos_and_returns_it_as_transformers_does(model, stepper):
    prompt = parity_prompts(model.config.vocab_size, None)[1]
    ids = torch.tensor([prompt])
    want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=64)[0, len(prompt):].tolist()  # fmt: skip
    got = generate(stepper, prompt, 64).tokens
    assert got == want
    if len(got) < 64:  # this prompt hits eos on the tiny model
        assert got[-1] == model.generation_config.eos_token_id


def test_sampling_with_a_seed_repeats_and_differs_from_another_seed(stepper):
    runs = [generate(stepper, [1, 9, 10], 20, do_sample=True, top_p=0.9, seed=s,
                     stop_at_eos=False).tokens for s in (7, 7, 8)]  # fmt: skip
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_tiny_top_p_or_temperature_samples_the_greedy_ids(stepper):
    greedy = generate(stepper, [1, 9, 10], 16, stop_at_eos=False).tokens
    nucleus = generate(stepper, [1, 9, 10], 16, do_sample=True, top_p=1e-6, stop_at_eos=False)
    cold = generate(stepper, [1, 9, 10], 16, do_sample=True, temperature=1e-4, stop_at_eos=False)
    assert nucleus.tokens == greedy
    assert cold.tokens == greedy


def test_top_p_keeps_only_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    generator = torch.Generator().manual_seed(0)
    drawn = {choose(logits, True, 1.0, 0.7, generator) for _ in range(200)}
    assert drawn == {0, 1}


def test_a_one_token_prompt_is_padded_to_the_shortest_prefill(model, stepper):
    ids = torch.tensor([[1]])
    want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=8, eos_token_id=None)[0, 1:].tolist()  # fmt: skip
    assert generate(stepper, [1], 8, stop_at_eos=False).tokens == want


def test_prompt_plus_new_tokens_beyond_the_cache_are_refused(stepper):
    with pytest.raises(ValidationError, match="maximum length 128"):
        generate(stepper, list(range(4, 104)), 64)


def test_bad_sampling_settings_are_refused(stepper):
    with pytest.raises(ExportConfigError, match="temperature > 0"):
        generate(stepper, [1, 2], 4, do_sample=True, temperature=0.0)


def test_encode_prompt_uses_the_tokenizer_as_transformers_does(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert encode_prompt(tokenizer, "hello") == tokenizer("hello")["input_ids"]


def test_timings_are_reported(stepper):
    result = generate(stepper, [1, 9, 10], 8, stop_at_eos=False)
    assert result.first_token_seconds > 0
    assert result.decode_tokens_per_second() > 0


def test_an_empty_prompt_is_refused(stepper):
    with pytest.raises(ExportConfigError, match="non-empty prompt"):
        generate(stepper, [], 4)


def test_eos_ids_accept_an_id_a_list_or_none():
    assert (eos_ids(2), eos_ids([2, 7]), eos_ids(None)) == ((2,), (2, 7), ())


def test_a_contract_of_a_format_without_a_generation_runtime_is_refused(tmp_path):
    from kd_convert.contract import Contract, write_contract

    contract = Contract("torchscript", "model.ts", [], [], [8], 1, {}, {}, None, {},
                        task="generation", cache={"max_length": 8})  # fmt: skip
    write_contract(tmp_path, contract)
    with pytest.raises(ExportConfigError, match="no generation runtime"):
        load_stepper(tmp_path)
