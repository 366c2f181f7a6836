from __future__ import annotations

import pytest
from kd_train.losses import LinearWarmup, LossArgumentError, LossConfig


def test_from_dict_builds_a_typed_config() -> None:
    cfg = LossConfig.from_dict(
        {
            "divergence": "skew_reverse_kl",
            "skew": 0.2,
            "temperature": 2,
            "t2_scale": False,
            "chunk_size": 256,
            "weights": {"kd": 1, "ce": {"start": 0.0, "end": 0.5, "warmup_steps": 10}},
        }
    )
    assert cfg.divergence == "skew_reverse_kl"
    assert cfg.temperature == 2.0
    assert cfg.weights["ce"] == LinearWarmup(0.0, 0.5, 10, 0)
    assert cfg.chunk_size == 256


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"temprature": 1.0}, "loss.temprature: unknown key (allowed: beta,"),
        (
            {"divergence": "kl"},
            "loss.divergence: 'kl' is not allowed (allowed: forward_kl, reverse_kl, jsd,",
        ),
        ({"beta": 1.5}, "loss.beta: must be <= 1.0, got 1.5"),
        ({"temperature": -1}, "loss.temperature: must be > 0.0, got -1"),
        ({"temperature": "hot"}, "loss.temperature: must be a number, got 'hot'"),
        ({"t2_scale": 1}, "loss.t2_scale: must be true or false, got 1"),
        ({"chunk_size": 0}, "loss.chunk_size: must be >= 1, got 0"),
        ({"weights": {"kdd": 1.0}}, "loss.weights.kdd: unknown key (allowed: kd, ce,"),
        ({"weights": {"kd": -1.0}}, "loss.weights.kd: must be >= 0.0, got -1.0"),
        ({"weights": {"ce": {"warmup": 5}}}, "loss.weights.ce.warmup: unknown key"),
        ({"weights": {"ce": {"warmup_steps": -5}}}, "loss.weights.ce.warmup_steps: must be >= 0"),
        (
            {"vocab_policy": "pad"},
            "loss.vocab_policy: 'pad' is not allowed (allowed: error, truncate)",
        ),
        ({"hidden": {"layer_map": [[1, 2]]}}, "loss.weights: 'hidden' is configured but has no"),
        ({"weights": {"hidden": 1.0}}, "loss.hidden: required when loss.weights has 'hidden'"),
        (
            {"weights": {"hidden": 1.0}, "hidden": {"layer_map": [[1]]}},
            "loss.hidden.layer_map[0][1]: item missing (too few items)",
        ),
        ({"weights": {"hidden": 1.0}, "hidden": {"layer_map": []}}, "loss.hidden.layer_map: must"),
        ([1, 2], "loss: must be a table/mapping, got list"),
    ],
)
def test_invalid_config_names_the_key_path(data: object, needle: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        LossConfig.from_dict(data)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_hidden_config_is_parsed() -> None:
    cfg = LossConfig.from_dict(
        {"weights": {"hidden": 0.1}, "hidden": {"layer_map": [[1, 2], [2, 4]], "kind": "cosine"}}
    )
    assert cfg.hidden is not None
    assert cfg.hidden.layer_map == ((1, 2), (2, 4))
    assert cfg.hidden.kind == "cosine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": {"kdd": 1.0}}, r"loss\.weights\.kdd: unknown key"),
        ({"weights": {"kd": -1.0}}, r"loss\.weights\.kd: must be >= 0"),
        ({"divergence": "kl"}, r"loss\.divergence: 'kl' is not allowed \(allowed: forward_kl,"),
        ({"temperature": 0.0}, r"loss\.temperature: must be > 0"),
        ({"chunk_size": 0}, r"loss\.chunk_size: must be >= 1"),
        ({"beta": 1.5}, r"loss\.beta: must be <= 1\.0, got 1\.5"),
        ({"t2_scale": "yes"}, r"loss\.t2_scale: must be true or false"),
        ({"weights": {"kd": 1.0, "hidden": 1.0}}, r"loss\.hidden: required"),
    ],
)
def test_building_a_config_directly_validates_like_from_dict(kwargs, message):
    with pytest.raises(LossArgumentError, match=message):
        LossConfig(**kwargs)
    with pytest.raises(LossArgumentError, match=message):
        LossConfig.from_dict(kwargs)


def test_to_dict_reads_back_to_an_equal_config():
    cfg = LossConfig.from_dict(
        {
            "weights": {"kd": 1.0, "hidden": {"start": 0.0, "end": 0.5, "warmup_steps": 3}},
            "hidden": {"layer_map": [[1, 2]], "kind": "cosine"},
            "divergence": "jsd",
        }
    )
    assert LossConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"temperature": float("nan")}, "loss.temperature: must be a finite number, got nan"),
        ({"beta": float("inf")}, "loss.beta: must be a finite number, got inf"),
        ({"weights": {"kd": float("inf")}}, "loss.weights.kd: must be a finite number, got inf"),
        (
            {"weights": {"ce": {"end": float("nan")}}},
            "loss.weights.ce.end: must be a finite number, got nan",
        ),
    ],
)
def test_non_finite_numbers_are_refused(data: dict, needle: str) -> None:
    with pytest.raises(LossArgumentError) as info:
        LossConfig.from_dict(data)
    assert str(info.value) == needle


def test_every_problem_gets_its_own_line() -> None:
    with pytest.raises(LossArgumentError) as info:
        LossConfig(temperature=0.0, chunk_size=0, colour="red")
    assert str(info.value).splitlines() == [
        "loss.temperature: must be > 0.0, got 0.0",
        "loss.chunk_size: must be >= 1, got 0",
        "loss.colour: unknown key (allowed: beta, chunk_size, code_pref_margin, "
        "cross_tokenizer, divergence, hidden, ignore_index, skew, span_loss, t2_scale, tail, "
        "temperature, vocab_policy, weights)",
    ]


def test_a_schedule_object_is_accepted_as_a_weight() -> None:
    ramp = LinearWarmup(0.0, 1.0, warmup_steps=5)
    assert LossConfig(weights={"ce": ramp}).weights["ce"] == ramp
