import re

import pytest
from kd_train.errors import KDTrainError
from kd_train.trainer.config import RunConfigError, load_config, parse_config

MINIMAL = {
    "student": {"path": "s"},
    "data": {"train": "d.jsonl"},
    "train": {"max_steps": 3},
    "output_dir": "out",
}


def with_(section, **values):
    return {**MINIMAL, section: {**MINIMAL.get(section, {}), **values}}


def test_minimal_config_takes_documented_defaults():
    cfg = parse_config(MINIMAL)
    assert (cfg.teacher.kind, cfg.train.grad_accum, cfg.optim.lr) == ("none", 1, 3e-4)


def test_unknown_key_names_its_path_and_the_allowed_keys():
    with pytest.raises(
        RunConfigError, match=r"^train\.max_step: unknown key \(allowed: batch_size, .*max_steps"
    ):
        parse_config({**MINIMAL, "train": {"max_steps": 3, "max_step": 4}})


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(
        RunConfigError, match=r"^train\.precision: 'fp16' is not allowed \(allowed: fp32, bf16\)$"
    ):
        parse_config(with_("train", precision="fp16"))


def test_wrong_type_names_the_key_path():
    with pytest.raises(RunConfigError, match=r"^optim\.lr: must be a number, got 'fast'$"):
        parse_config(with_("optim", lr="fast"))


def test_out_of_range_value_is_rejected_with_the_bound():
    with pytest.raises(RunConfigError, match=r"^train\.batch_size: must be >= 1, got 0$"):
        parse_config(with_("train", batch_size=0))


def test_missing_required_section_is_named():
    with pytest.raises(RunConfigError, match=r"^data: required key is missing$"):
        parse_config({k: v for k, v in MINIMAL.items() if k != "data"})


def test_student_needs_exactly_one_of_path_and_config():
    with pytest.raises(RunConfigError, match=r"exactly one of 'path'"):
        parse_config({**MINIMAL, "student": {}})


def test_student_config_needs_a_model_type_and_a_tokenizer():
    with pytest.raises(RunConfigError, match=r"student\.config\.model_type: required"):
        parse_config({**MINIMAL, "student": {"config": {"hidden_size": 8}, "tokenizer": "t"}})
    with pytest.raises(RunConfigError, match=r"student\.tokenizer: required with student\.config"):
        parse_config({**MINIMAL, "student": {"config": {"model_type": "llama"}}})


def test_hf_teacher_needs_a_path():
    with pytest.raises(RunConfigError, match=r"teacher\.path: required when teacher\.kind is 'hf'"):
        parse_config({**MINIMAL, "teacher": {"kind": "hf"}})


def test_betas_must_be_two_numbers_below_one():
    with pytest.raises(RunConfigError, match=r"optim.betas"):
        parse_config(with_("optim", betas=[0.9]))


def test_clip_norm_may_be_turned_off_with_null():
    assert parse_config(with_("train", clip_norm=None)).train.clip_norm is None


def test_to_dict_round_trips():
    cfg = parse_config(with_("optim", betas=[0.8, 0.9]))
    assert parse_config(cfg.to_dict()) == cfg


def test_yaml_and_toml_give_the_same_config_with_paths_resolved(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "student: {path: s}\ndata: {train: d.jsonl}\ntrain: {max_steps: 3}\noutput_dir: out\n"
    )
    (tmp_path / "run.toml").write_text(
        'output_dir = "out"\n[student]\npath = "s"\n[data]\ntrain = "d.jsonl"\n'
        "[train]\nmax_steps = 3\n"
    )
    from_yaml, from_toml = load_config(tmp_path / "run.yaml"), load_config(tmp_path / "run.toml")
    assert from_yaml == from_toml
    assert from_yaml.data.train == str(tmp_path / "d.jsonl")


def test_unknown_extension_is_an_error(tmp_path):
    (tmp_path / "run.ini").write_text("x")
    with pytest.raises(RunConfigError, match=r"unknown extension '.ini'"):
        load_config(tmp_path / "run.ini")


def test_invalid_yaml_names_the_file(tmp_path):
    (tmp_path / "run.yaml").write_text("student: [unclosed\n")
    with pytest.raises(RunConfigError, match=r"run\.yaml is not valid yaml"):
        load_config(tmp_path / "run.yaml")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(RunConfigError, match=r"cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_top_level_must_be_a_mapping(tmp_path):
    (tmp_path / "run.yaml").write_text("- a\n- b\n")
    with pytest.raises(RunConfigError, match=r"top level must be a mapping"):
        load_config(tmp_path / "run.yaml")


def test_distributed_strategy_defaults_to_ddp_and_accepts_fsdp():
    assert parse_config(MINIMAL).distributed.strategy == "ddp"
    assert parse_config({**MINIMAL, "distributed": {"strategy": "fsdp"}}).distributed.strategy == (
        "fsdp"
    )


def test_unknown_strategy_lists_the_allowed_values():
    with pytest.raises(
        RunConfigError,
        match=r"distributed\.strategy: 'zero3' is not allowed \(allowed: ddp, fsdp\)",
    ):
        parse_config({**MINIMAL, "distributed": {"strategy": "zero3"}})


def test_unknown_key_of_the_distributed_section_is_named():
    with pytest.raises(
        RunConfigError, match=r"^distributed\.stratgy: unknown key \(allowed: strategy\)$"
    ):
        parse_config({**MINIMAL, "distributed": {"stratgy": "fsdp"}})


def test_fsdp_config_round_trips():
    cfg = parse_config({**MINIMAL, "distributed": {"strategy": "fsdp"}})
    assert parse_config(cfg.to_dict()) == cfg


CACHED = {"kind": "cached", "path": "cache"}


def test_cached_teacher_with_a_separate_eval_file_needs_an_eval_cache():
    config = {**with_("data", eval="eval.jsonl"), "teacher": CACHED}
    with pytest.raises(
        RunConfigError, match=r"data\.eval: a separate file.*give it as teacher\.eval_path"
    ):
        parse_config(config)
    config["teacher"] = {**CACHED, "eval_path": "eval-cache"}
    assert parse_config(config).teacher.eval_path == "eval-cache"


def test_cached_teacher_holding_out_part_of_the_train_file_needs_no_eval_cache():
    config = {**with_("data", eval_fraction=0.2), "teacher": CACHED}
    assert parse_config(config).teacher.eval_path is None


def test_an_eval_cache_without_an_eval_file_is_refused():
    with pytest.raises(RunConfigError, match=r"teacher\.eval_path: set but data\.eval is not"):
        parse_config({**MINIMAL, "teacher": {**CACHED, "eval_path": "eval-cache"}})


def test_an_eval_cache_is_refused_for_a_live_teacher():
    teacher = {"kind": "hf", "path": "t", "eval_path": "eval-cache"}
    with pytest.raises(RunConfigError, match=r"teacher\.eval_path: only read when .*'cached'"):
        parse_config({**with_("data", eval="e.jsonl"), "teacher": teacher})


def test_the_eval_cache_path_is_resolved_against_the_config_file(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "student: {path: s}\ndata: {train: d.jsonl, eval: e.jsonl}\ntrain: {max_steps: 3}\n"
        "teacher: {kind: cached, path: c, eval_path: ec}\noutput_dir: out\n"
    )
    assert load_config(tmp_path / "run.yaml").teacher.eval_path == str(tmp_path / "ec")


HTTP = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (
            {"kind": "http", "topk": 4},
            r"teacher\.http: required when teacher\.kind is 'http' \(base_url, model, \.\.\.\)",
        ),
        (
            {"kind": "hf", "path": "t", "http": HTTP},
            r"teacher\.http: only read when teacher\.kind is 'http' \(it is 'hf'\)",
        ),
        ({"kind": "http", "http": HTTP}, r"teacher\.topk: required when teacher\.kind is 'http'"),
        (
            {"kind": "http", "topk": 4, "http": {"model": "m"}},
            r"^teacher\.http\.base_url: required key is missing$",
        ),
        (
            {"kind": "http", "topk": 4, "http": {**HTTP, "bogus": 1}},
            r"^teacher\.http\.bogus: unknown key \(allowed: api, api_key_env, .*scoring",
        ),
        (
            {"kind": "http", "topk": 4, "http": {**HTTP, "scoring": "logits"}},
            r"^teacher\.http\.scoring: 'logits' is not allowed \(allowed: echo, prompt_logprobs\)$",
        ),
        (
            {"kind": "http", "topk": 4, "http": {**HTTP, "store": 3}},
            r"^teacher\.http\.store: must be a string, got 3$",
        ),
        ({"kind": "records", "topk": 4}, r"teacher\.topk: not read when teacher\.kind is 'rec"),
        ({"kind": "records", "path": "x"}, r"teacher\.path: only read when teacher\.kind is"),
        ({"kind": "cached"}, r"teacher\.path: required when teacher\.kind is 'cached'"),
    ],
)
def test_teacher_kinds_are_checked_when_the_config_is_parsed(teacher, message):
    with pytest.raises(RunConfigError, match=message):
        parse_config({**MINIMAL, "teacher": teacher})


def test_an_http_teacher_round_trips_through_to_dict():
    http = {**HTTP, "scoring": "prompt_logprobs", "api_key_env": "KEY", "budget": 2.0}
    http["price_per_1k_prompt"] = 0.5  # a budget needs a price
    cfg = parse_config({**MINIMAL, "teacher": {"kind": "http", "topk": 4, "http": http}})
    assert cfg.teacher.http is not None
    assert cfg.teacher.http.endpoint.scoring == "prompt_logprobs"
    assert cfg.teacher.http.api_key_env == "KEY"
    assert parse_config(cfg.to_dict()) == cfg


def test_a_kd_weight_without_a_teacher_is_refused():
    with pytest.raises(
        RunConfigError, match=r"^loss\.weights: has a KD term but teacher\.kind is 'none'"
    ):
        parse_config({**MINIMAL, "loss": {"weights": {"kd": 1.0}}})


def test_the_default_weights_follow_the_teacher():
    assert parse_config(MINIMAL).loss.weights == {"ce": 1.0}
    hf = parse_config({**MINIMAL, "teacher": {"kind": "hf", "path": "t"}})
    assert hf.loss.weights == {"kd": 1.0}


def test_an_http_api_key_variable_that_is_not_set_is_refused(tmp_path):
    from kd_train.trainer.components import open_http_teacher

    cfg = parse_config(
        {**MINIMAL, "teacher": {"kind": "http", "topk": 4, "http": {**HTTP, "api_key_env": "K"}}}
    )
    assert cfg.teacher.http is not None
    with pytest.raises(KDTrainError, match="names K, which is not set"):
        open_http_teacher(cfg.teacher.http, 4, None, tmp_path, {})
    with pytest.raises(KDTrainError, match=r"teacher\.http\.store is required"):
        open_http_teacher(cfg.teacher.http, 4, None, None, {"K": "secret"})


HTTP_TEACHER = {"kind": "http", "topk": 4, "http": HTTP}
HF_HIDDEN = {"weights": {"kd": 1.0, "hidden": 1.0}, "hidden": {"layer_map": [[1, 2]]}}


@pytest.mark.parametrize(
    ("config", "path", "allowed"),
    [
        ({**MINIMAL, "outputdir": "x"}, "outputdir", "data, distributed, loss, optim,"),
        (with_("student", revision="main"), "student.revision", "config, lora, path, tokenizer"),
        ({**MINIMAL, "teacher": {"knd": "hf"}}, "teacher.knd", "eval_path, http, kind, path,"),
        (
            {**MINIMAL, "teacher": {**HTTP_TEACHER, "http": {**HTTP, "key": "s"}}},
            "teacher.http.key",
            "api, api_key_env, base_url, budget,",
        ),
        (
            {**MINIMAL, "teacher": {**HTTP_TEACHER, "http": {**HTTP, "retry": {"tries": 2}}}},
            "teacher.http.retry.tries",
            "base_delay, max_attempts, max_delay, max_retry_after",
        ),
        (with_("data", test="t.jsonl"), "data.test", "eval, eval_fraction, max_length, train"),
        ({**MINIMAL, "loss": {"temp": 2.0}}, "loss.temp", "beta, chunk_size,"),
        ({**MINIMAL, "loss": {"weights": {"kl": 1.0}}}, "loss.weights.kl", "kd, ce, span_"),
        (
            {**MINIMAL, "loss": {"weights": {"ce": {"ramp": 3}}}},
            "loss.weights.ce.ramp",
            "end, start, start_step, warmup_steps",
        ),
        (
            {**MINIMAL, "loss": {**HF_HIDDEN, "hidden": {"layer_map": [[1, 2]], "k": 1}}},
            "loss.hidden.k",
            "kind, layer_map",
        ),
        (with_("optim", momentum=0.9), "optim.momentum", "betas, eps, lr,"),
        (with_("train", steps=3), "train.steps", "batch_size, checkpoint_every,"),
        ({**MINIMAL, "distributed": {"world": 2}}, "distributed.world", "strategy"),
    ],
)
def test_an_unknown_key_is_refused_at_every_level_naming_its_path(config, path, allowed):
    with pytest.raises(RunConfigError) as info:
        parse_config(config)
    assert str(info.value).startswith(f"{path}: unknown key (allowed: {allowed}")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("optim", "lr", float("nan")),
        ("optim", "eps", float("inf")),
        ("data", "eval_fraction", float("nan")),
        ("train", "clip_norm", float("inf")),
    ],
)
def test_a_non_finite_number_is_refused(section, key, value):
    with pytest.raises(RunConfigError, match=rf"^{section}\.{key}: must be a finite number, got"):
        parse_config(with_(section, **{key: value}))


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({**MINIMAL, "loss": {"temperature": float("inf")}}, "loss.temperature"),
        ({**MINIMAL, "loss": {"weights": {"ce": float("nan")}}}, "loss.weights.ce"),
        (
            {**MINIMAL, "teacher": {**HTTP_TEACHER, "http": {**HTTP, "budget": float("inf")}}},
            "teacher.http.budget",
        ),
        ({**MINIMAL, "optim": {"betas": [0.9, float("nan")]}}, "optim.betas[1]"),
    ],
)
def test_a_non_finite_number_is_refused_in_nested_tables(config, path):
    with pytest.raises(RunConfigError, match=rf"^{re.escape(path)}: must be a finite number"):
        parse_config(config)


def test_every_problem_gets_a_line_naming_the_file(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "student: {path: s}\ndata: {train: d.jsonl}\noutput_dir: out\n"
        "train: {max_steps: 0, precision: fp16}\n"
    )
    with pytest.raises(RunConfigError) as info:
        load_config(tmp_path / "run.yaml")
    file = tmp_path / "run.yaml"
    assert str(info.value).splitlines() == [
        f"{file}: train.max_steps: must be >= 1, got 0",
        f"{file}: train.precision: 'fp16' is not allowed (allowed: fp32, bf16)",
    ]


def test_a_rule_across_sections_names_the_file(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "student: {path: s}\ndata: {train: d.jsonl}\noutput_dir: out\ntrain: {max_steps: 1}\n"
        "loss: {weights: {kd: 1.0}}\n"
    )
    with pytest.raises(RunConfigError, match=r"run\.yaml: loss\.weights: has a KD term but"):
        load_config(tmp_path / "run.yaml")


def test_an_explicit_null_stands_for_the_default():
    cfg = parse_config(with_("train", batch_size=None, threads=None))
    assert (cfg.train.batch_size, cfg.train.threads) == (8, None)


def test_a_string_is_not_taken_for_a_number_nor_a_number_for_a_boolean():
    with pytest.raises(RunConfigError, match=r"^train\.max_steps: must be an integer, got '3'$"):
        parse_config(with_("train", max_steps="3"))
    with pytest.raises(RunConfigError, match=r"^train\.seed: must be an integer, got True$"):
        parse_config(with_("train", seed=True))
    with pytest.raises(RunConfigError, match=r"^loss\.t2_scale: must be true or false, got 1$"):
        parse_config({**MINIMAL, "loss": {"weights": {"ce": 1.0}, "t2_scale": 1}})


def test_span_terms_scored_by_kd_need_a_teacher():
    loss = {"weights": {"ce": 1.0, "span_tool_name": 1.0}, "span_loss": "kd"}
    with pytest.raises(RunConfigError, match=r"KD term but teacher\.kind is 'none'"):
        parse_config({**MINIMAL, "loss": loss})
    loss["span_loss"] = "ce"
    assert parse_config({**MINIMAL, "loss": loss}).loss.span_loss == "ce"


@pytest.mark.parametrize("teacher", [CACHED, {"kind": "records"}, HTTP_TEACHER])
def test_teacher_kinds_without_hidden_states_cannot_serve_hidden_matching(teacher):
    with pytest.raises(RunConfigError, match=r"^loss\.hidden: .*only a local model computes"):
        parse_config({**MINIMAL, "teacher": teacher, "loss": HF_HIDDEN})


def test_hidden_matching_is_refused_under_fsdp():
    config = {**MINIMAL, "teacher": {"kind": "hf", "path": "t"}, "loss": HF_HIDDEN}
    assert parse_config(config).loss.hidden is not None
    with pytest.raises(RunConfigError, match=r"^loss\.hidden: not supported with .*'fsdp'"):
        parse_config({**config, "distributed": {"strategy": "fsdp"}})


def test_the_stored_form_is_unchanged():
    cfg = parse_config({**MINIMAL, "teacher": {"kind": "hf", "path": "t"}})
    data = cfg.to_dict()
    assert list(data) == [
        "student",
        "data",
        "train",
        "output_dir",
        "teacher",
        "loss",
        "optim",
        "distributed",
    ]
    assert data["teacher"] == {"kind": "hf", "path": "t", "topk": None, "eval_path": None}
    assert data["optim"]["betas"] == [0.9, 0.999]
