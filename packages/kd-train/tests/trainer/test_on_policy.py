"""On-policy and sequence-level distillation: sources, sampling, masking, resume, refusals."""

import json
import shutil

import pytest
import torch
from kd_train.data import IGNORE_INDEX, collate
from kd_train.data.tokenization import Example
from kd_train.trainer import parse_config, train
from kd_train.trainer.config import RunConfigError
from kd_train.trainer.metrics import read_metrics
from kd_train.trainer.on_policy import (
    Sampler,
    completion_examples,
    eos_token_ids,
    prompts,
    step_source,
)
from kd_train.trainer.train_config import OnPolicyConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

EOS = 2


def example(ids: list[int], n_prompt: int, rid: str = "r") -> Example:
    t = torch.tensor(ids)
    labels = t.clone()
    labels[:n_prompt] = IGNORE_INDEX
    return Example(rid, t, labels, {"tool_name": torch.zeros(len(ids), dtype=torch.bool)})


# -- the step's source ------------------------------------------------------------------


@pytest.mark.parametrize("lmbda", [0.0, 0.25, 1.0])
def test_the_student_samples_on_a_fraction_lmbda_of_the_steps(lmbda):
    cfg = OnPolicyConfig(lmbda=lmbda)
    sources = [step_source(cfg, seed=3, step=s) for s in range(2000)]
    share = sources.count("student") / len(sources)
    assert share == pytest.approx(lmbda, abs=0.03)
    assert set(sources) <= {"student", "data"}


def test_the_source_is_a_pure_function_of_seed_and_step():
    cfg = OnPolicyConfig(lmbda=0.5)
    first = [step_source(cfg, 1, s) for s in range(64)]
    assert first == [step_source(cfg, 1, s) for s in range(64)]
    assert first != [step_source(cfg, 2, s) for s in range(64)]


def test_seq_kd_gives_the_teacher_the_steps_the_student_does_not_take():
    cfg = OnPolicyConfig(lmbda=0.5, seq_kd=True)
    sources = {step_source(cfg, 0, s) for s in range(200)}
    assert sources == {"student", "teacher"}


# -- prompts and completions ------------------------------------------------------------


def test_prompts_are_everything_before_the_first_label_left_padded():
    batch = collate([example([1, 5, 6, 7, 2], 3), example([1, 8, 9, 2], 2)], pad_token_id=0)
    ids, mask, lengths = prompts(batch, pad_id=0)
    assert lengths == [3, 2]
    assert ids.tolist() == [[1, 5, 6], [0, 1, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_a_record_without_a_completion_token_is_refused_by_name():
    ex = example([1, 5, 6], 3, rid="no-completion")
    with pytest.raises(Exception, match="'no-completion' has no completion token"):
        prompts(collate([ex], pad_token_id=0), pad_id=0)


def test_completions_end_at_the_first_eos_and_only_they_carry_labels():
    batch = collate([example([1, 5, 6, 7, 2], 3), example([1, 8, 9, 2], 2)], pad_token_id=0)
    # generate's output: left-padded prompts (width 3) + 4 sampled tokens per row.
    sequences = torch.tensor([[1, 5, 6, 11, EOS, 0, 0], [0, 1, 8, 12, 13, 14, 15]])
    out = completion_examples(batch, sequences, [3, 2], {EOS})
    assert out[0].input_ids.tolist() == [1, 5, 6, 11, EOS]
    assert out[0].labels.tolist() == [-100, -100, -100, 11, EOS]
    assert out[1].input_ids.tolist() == [1, 8, 12, 13, 14, 15]  # no eos: all 4 kept
    assert out[1].labels.tolist() == [-100, -100, 12, 13, 14, 15]
    assert not any(bool(m.any()) for e in out for m in e.span_masks.values())
    padded = collate(out, pad_token_id=0)
    assert padded.labels[0, 5:].tolist() == [-100]  # the padding after the eos


# -- sampling from a real model ----------------------------------------------------------


@pytest.fixture
def student(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(
        tiny_llama_dir
    )


def sampler_for(model, tokenizer, seed=0, rank=0, **cfg):
    return Sampler(
        OnPolicyConfig(lmbda=1.0, max_new_tokens=6, **cfg),
        seed=seed,
        rank=rank,
        pad_id=int(tokenizer.pad_token_id or 0),
        eos_ids=eos_token_ids(model, tokenizer),
        max_length=64,
        device=torch.device("cpu"),
    )


def prompt_batch(tokenizer):
    rows = []
    for i, text in enumerate(["call the weather tool", "list files"]):
        ids = [tokenizer.bos_token_id or 1, *tokenizer(text, add_special_tokens=False).input_ids]
        rows.append(example([*ids, 5, 6], len(ids), rid=f"p{i}"))
    return collate(rows, pad_token_id=int(tokenizer.pad_token_id or 0))


def test_sampling_uses_its_own_generator_and_restores_the_model_mode(student):
    model, tokenizer = student
    model.train()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    rollout = sampler_for(model, tokenizer).sample(model, prompt_batch(tokenizer), "student")
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    assert model.training
    assert rollout.rows == 2
    assert rollout.generated > 0
    labelled = int((rollout.batch.labels != IGNORE_INDEX).sum())
    assert labelled == rollout.generated


def test_samples_are_the_models_own_and_the_state_round_trips(student):
    model, tokenizer = student
    batch = prompt_batch(tokenizer)
    a = sampler_for(model, tokenizer)
    saved = a.state()
    first = a.sample(model, batch, "student").batch
    b = sampler_for(model, tokenizer, seed=99)
    b.load_state(saved)
    assert torch.equal(b.sample(model, batch, "student").batch.input_ids, first.input_ids)
    # The same generator state in plain transformers generate gives the same tokens.
    ids, mask, _ = prompts(batch, int(tokenizer.pad_token_id or 0))
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(torch.frombuffer(bytearray(_cpu_bytes(saved)), dtype=torch.uint8))
        model.eval()
        direct = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=0.9,
            top_k=0,
            max_new_tokens=6,
            pad_token_id=int(tokenizer.pad_token_id or 0),
        )
    for row, example_ in enumerate(
        completion_examples(
            batch, direct, [len(r) for r in _prompt_rows(batch)], eos_token_ids(model, tokenizer)
        )
    ):
        assert (
            example_.input_ids.tolist()
            == first.input_ids[row, : example_.input_ids.numel()].tolist()
        )


def _cpu_bytes(state: str) -> bytes:
    import base64

    return base64.b64decode(dict(p.split(":", 1) for p in state.split(";"))["cpu"])


def _prompt_rows(batch):
    return [
        batch.input_ids[r, : int((batch.labels[r] != IGNORE_INDEX).nonzero()[0])]
        for r in range(batch.input_ids.shape[0])
    ]


def test_different_ranks_sample_different_streams(student):
    model, tokenizer = student
    batch = prompt_batch(tokenizer)
    r0 = sampler_for(model, tokenizer, rank=0, temperature=5.0)
    r1 = sampler_for(model, tokenizer, rank=1, temperature=5.0)
    assert r0.state() != r1.state()
    assert not torch.equal(
        r0.sample(model, batch, "student").batch.input_ids,
        r1.sample(model, batch, "student").batch.input_ids,
    )


def test_a_corrupt_sampler_state_is_refused(student):
    model, tokenizer = student
    with pytest.raises(Exception, match="sampler state is not valid"):
        sampler_for(model, tokenizer).load_state("cpu:AAAA")


# -- runs ------------------------------------------------------------------------------


def on_policy_config(make_config, **on_policy):
    return make_config(
        train={"on_policy": {"lmbda": 1.0, "max_new_tokens": 8, **on_policy}},
        loss={"divergence": "reverse_kl", "weights": {"kd": 1.0}},
    )


def test_an_on_policy_run_trains_on_the_students_samples_and_logs_the_time_split(make_config):
    result = train(parse_config(on_policy_config(make_config)), progress=False)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["source"] for r in rows] == ["student"] * 6
    for row in rows:
        assert row["generate_s"] > 0
        assert row["teacher_s"] > 0
        assert row["train_s"] > 0
        assert 1 <= row["gen_len_mean"] <= 8
        # The loss normaliser is the sampled tokens: tokens = prompt + sampled, per row.
        assert row["tokens"] > 4 * row["gen_len_mean"]
    samples = [json.loads(line) for line in (result.run_dir / "samples.jsonl").open()]
    assert [s["step"] for s in samples] == [1, 2, 3, 4, 5, 6]
    assert all(1 <= len(s["completion_ids"]) <= 8 for s in samples)


def test_an_off_policy_step_has_no_generation(make_config):
    cfg = on_policy_config(make_config, lmbda=0.0)
    rows = read_metrics(train(parse_config(cfg), progress=False).run_dir / "metrics.jsonl")
    assert {r["source"] for r in rows} == {"data"}
    assert all(r["generate_s"] < 0.01 and r["gen_len_mean"] == 0 for r in rows)


def test_seq_kd_samples_from_the_teacher(make_config):
    cfg = on_policy_config(make_config, lmbda=0.0, seq_kd=True)
    result = train(parse_config(cfg), progress=False)
    samples = [json.loads(line) for line in (result.run_dir / "samples.jsonl").open()]
    assert {s["source"] for s in samples} == {"teacher"}


def test_a_resumed_on_policy_run_reproduces_the_uninterrupted_one(make_config):
    cfg = on_policy_config(make_config, lmbda=0.6, temperature=1.5)
    cfg["train"].update(checkpoint_every=3, keep_checkpoints=3)
    run = parse_config(cfg)
    full = train(run, progress=False)
    reference = read_metrics(full.run_dir / "metrics.jsonl")
    samples = (full.run_dir / "samples.jsonl").read_text()
    final = load_file(str(full.student_dir / "model.safetensors"))
    # The student samples before the checkpoint (step 3) and after it: the sampler's state
    # at the checkpoint is not its initial one.
    sources = [r["source"] for r in reference]
    assert "student" in sources[:3]
    assert "student" in sources[3:]
    assert "data" in sources
    shutil.rmtree(full.run_dir / "checkpoints" / "step-00000006")
    shutil.rmtree(full.student_dir)
    resumed = train(run, resume=True, progress=False)
    again = read_metrics(resumed.run_dir / "metrics.jsonl")
    keys = ("loss", "kd", "source", "gen_len_mean", "tokens", "grad_norm")
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in reference]
    assert (resumed.run_dir / "samples.jsonl").read_text() == samples
    weights = load_file(str(resumed.student_dir / "model.safetensors"))
    assert all(torch.equal(final[k], weights[k]) for k in final)


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        ({"kind": "records"}, "teacher.kind 'records' cannot score"),
        ({"kind": "cached", "path": "cache"}, "teacher.kind 'cached' cannot score"),
        ({"kind": "none"}, "teacher.kind 'none' cannot score"),
    ],
)
def test_teachers_that_cannot_score_new_text_are_refused_at_config_time(
    make_config, teacher, message
):
    cfg = on_policy_config(make_config)
    cfg["teacher"] = teacher
    cfg["loss"] = {"weights": {"ce": 1.0}} if teacher["kind"] == "none" else cfg["loss"]
    with pytest.raises(RunConfigError, match=rf"{message}.*use teacher.kind 'hf' or 'http'"):
        parse_config(cfg)


def test_seq_kd_needs_a_local_teacher(make_config):
    cfg = on_policy_config(make_config, seq_kd=True)
    cfg["teacher"] = {
        "kind": "http",
        "topk": 4,
        "http": {"base_url": "http://127.0.0.1:1/v1", "model": "m"},
    }
    with pytest.raises(RunConfigError, match=r"seq_kd.*kd-train generate"):
        parse_config(cfg)


@pytest.mark.parametrize(
    ("key", "value"),
    [("lmbda", 1.5), ("temperature", 0.0), ("top_p", 0.0), ("max_new_tokens", 0), ("lmbda", "1")],
)
def test_out_of_range_sampling_settings_are_refused_with_their_key(make_config, key, value):
    with pytest.raises(RunConfigError, match=rf"train.on_policy.{key}"):
        parse_config(on_policy_config(make_config, **{key: value}))
