import random

import pytest
from kd_train.errors import KDTrainError
from kd_train.teachers.openai_api import (
    MalformedResponseError,
    first_mismatch,
    parse_echo,
    parse_generation,
    parse_prompt_logprobs,
    token_to_id,
)
from kd_train.teachers.ratelimit import RateLimiter
from kd_train.teachers.retry import RetryPolicy, parse_retry_after
from kd_train.testing import train_tiny_tokenizer


def test_backoff_ceiling_doubles_then_caps():
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)

    class Top(random.Random):
        def uniform(self, a, b):
            return b

    assert [policy.delay(n, rng=Top()) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_backoff_is_jittered_below_the_ceiling():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(1)
    delays = {round(policy.delay(3, rng=rng), 6) for _ in range(20)}
    assert len(delays) > 10
    assert all(0.0 <= d <= 4.0 for d in delays)


def test_retry_after_is_a_floor_and_is_capped():
    policy = RetryPolicy(base_delay=0.0, max_retry_after=10.0)
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=500.0) == 10.0


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base_delay": -1.0}])
def test_invalid_retry_policy_raises_value_error(kwargs):
    with pytest.raises(ValueError, match=">="):
        RetryPolicy(**kwargs)


def test_retry_after_http_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=2e9) == 0.0


def test_rate_limiter_spaces_starts_by_sixty_over_rpm():
    now = [0.0]
    starts = []

    def sleep(s):
        now[0] += s

    limiter = RateLimiter(rpm=30, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.acquire()
        starts.append(now[0])
    assert starts == [0.0, 2.0, 4.0, 6.0]


def test_rate_limiter_without_rpm_never_sleeps():
    limiter = RateLimiter(rpm=None, sleep=lambda s: pytest.fail("slept"))
    for _ in range(3):
        limiter.acquire()


def test_rate_limiter_rejects_non_positive_rpm():
    with pytest.raises(ValueError, match="rpm must be > 0"):
        RateLimiter(rpm=0)


def test_chat_response_is_parsed_with_sorted_alternatives():
    body = {
        "choices": [
            {
                "message": {"content": "yes"},
                "logprobs": {
                    "content": [
                        {
                            "token": "yes",
                            "logprob": -0.2,
                            "top_logprobs": [
                                {"token": "no", "logprob": -1.9},
                                {"token": "yes", "logprob": -0.2},
                            ],
                        }
                    ]
                },
            }
        ]
    }
    gen = parse_generation("chat", body)
    assert (gen.text, gen.tokens, gen.top, gen.usage) == (
        "yes",
        ["yes"],
        [[("yes", -0.2), ("no", -1.9)]],
        None,
    )


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{"text": 3}]}, "x"])
def test_malformed_completion_body_raises(body):
    with pytest.raises(MalformedResponseError):
        parse_generation("completions", body)


def test_echo_without_enough_positions_raises():
    body = {"choices": [{"logprobs": {"top_logprobs": [None, {"a": -1.0}]}}]}
    with pytest.raises(MalformedResponseError, match="echo"):
        parse_echo(body, n_prompt=2)


def test_unknown_token_string_names_the_token():
    with pytest.raises(KDTrainError, match="'zz'"):
        token_to_id("zz", {"a": 1})


def test_echo_without_echoed_tokens_raises():
    body = {"choices": [{"logprobs": {"top_logprobs": [None, {"a": -1.0}, {"b": -1.0}]}}]}
    with pytest.raises(MalformedResponseError, match="echo"):
        parse_echo(body, n_prompt=2)


def entry(logprob, rank, decoded):
    return {"logprob": logprob, "rank": rank, "decoded_token": decoded}


def test_prompt_logprobs_entry_with_the_prompt_token_outside_the_topk_is_sorted():
    # k = 2: the prompt token 7 is third, so vLLM adds it after the top-2.
    body = {
        "choices": [
            {
                "prompt_logprobs": [
                    None,
                    {"4": entry(-0.5, 1, "a"), "9": entry(-1.0, 2, "b"), "7": entry(-3.0, 3, "c")},
                ],
                "logprobs": {"top_logprobs": [{"token_id:2": -0.1, "token_id:4": -2.0}]},
            }
        ]
    }
    scores = parse_prompt_logprobs(body, [5, 7])
    assert scores.top == [
        [("token_id:4", -0.5), ("token_id:9", -1.0), ("token_id:7", -3.0)],
        [("token_id:2", -0.1), ("token_id:4", -2.0)],
    ]
    assert scores.returned == [None, "c"]


def test_prompt_logprobs_entry_without_the_prompt_token_is_named_so():
    body = {
        "choices": [
            {
                "prompt_logprobs": [None, {"4": entry(-0.5, 1, "a")}],
                "logprobs": {"top_logprobs": [{"token_id:2": -0.1}]},
            }
        ]
    }
    assert parse_prompt_logprobs(body, [5, 7]).returned == [None, "<no entry for id 7>"]


@pytest.mark.parametrize(
    "body",
    [
        {"choices": [{"prompt_logprobs": [None]}]},
        {"choices": [{"prompt_logprobs": [None, {"4": entry(-0.5, 1, "a")}]}]},
    ],
)
def test_prompt_logprobs_answer_without_every_position_raises(body):
    with pytest.raises(MalformedResponseError, match=r"teacher\.http\.scoring"):
        parse_prompt_logprobs(body, [5, 7])


def test_first_mismatch_accepts_every_name_of_the_token_and_finds_another():
    tok = train_tiny_tokenizer()
    ids = tok("The fox")["input_ids"]
    names = [
        tok.convert_ids_to_tokens(ids[0]),
        f"token_id:{ids[1]}",
        *(tok.decode([i]) for i in ids[2:]),
    ]
    assert first_mismatch(tok, ids, names) is None
    assert first_mismatch(tok, ids, [None, *names[1:]]) is None
    assert first_mismatch(tok, ids, [names[0], "zz", *names[2:]]) == 1
