"""HTTPTeacher against the loopback server (a real HTTP server on 127.0.0.1, a real model)."""

import logging
import socket
import threading
import time

import pytest
import torch
from kd_train.store import BudgetExhaustedError, BudgetOverrunError, open_store, sqlite_url
from kd_train.store.schema import charges
from kd_train.teachers.base import Teacher
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig, HTTPTeacherError
from kd_train.teachers.retry import RetryPolicy
from kd_train.testing import FaultPlan, LoopbackTeacherServer
from sqlalchemy import select
from transformers import AutoModelForCausalLM, AutoTokenizer

FAST = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01)
KEY = "sk-test-9f8e7d6c5b4a"


@pytest.fixture
def tokenizer(tiny_teacher_dir):
    return AutoTokenizer.from_pretrained(tiny_teacher_dir)


@pytest.fixture
def store(tmp_path):
    s = open_store(sqlite_url(tmp_path / "store.sqlite"))
    yield s
    s.close()


def serve(model_dir, **kwargs):
    return LoopbackTeacherServer(model_dir, api_key=KEY, **kwargs).start()


def make_teacher(server, store=None, tokenizer=None, **overrides):
    settings = {
        "base_url": server.base_url,
        "model": "tiny",
        "max_tokens": 3,
        "top_logprobs": 2,
        "retry": FAST,
        "timeout": 5.0,
        "price_per_1k_prompt": 1.0,
        "price_per_1k_completion": 2.0,
    }
    settings.update(overrides)
    return HTTPTeacher(HTTPTeacherConfig(**settings), api_key=KEY, store=store, tokenizer=tokenizer)


def test_generation_cost_comes_from_reported_usage(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir)
    with make_teacher(server, store) as teacher:
        response = teacher.generate("The quick brown fox")
    usage = server.answered[0]
    server.stop()
    expected = -(-(usage["prompt_tokens"] * 10**9 + usage["completion_tokens"] * 2 * 10**9) // 1000)
    assert (response.cost_nanos, response.estimated, response.cached) == (expected, False, False)
    assert store.ledger.status("default").spent_nanos == expected


def test_repeated_request_is_a_free_cache_hit_without_a_server_call(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir)
    with make_teacher(server, store) as teacher:
        first = teacher.generate("hello")
        second = teacher.generate("hello")
    server.stop()
    assert (second.cached, second.cost_nanos, second.body) == (True, 0, first.body)
    assert server.counts["ok"] == 1
    assert teacher.counters.cache_hits == 1


@pytest.mark.parametrize("fault", ["429", "500", "drop", "malformed"])
def test_transient_fault_is_retried_until_success(tiny_teacher_dir, store, fault):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=[fault, fault]))
    with make_teacher(server, store) as teacher:
        response = teacher.generate("hello")
    server.stop()
    assert response.body["choices"][0]["text"] is not None
    assert (server.counts[fault], server.counts["ok"], teacher.counters.retries) == (2, 1, 2)


def test_retry_after_is_honoured(tiny_teacher_dir):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["429"]), retry_after=0.3)
    with make_teacher(server) as teacher:
        start = time.monotonic()
        teacher.generate("hello")
        elapsed = time.monotonic() - start
    server.stop()
    assert elapsed >= 0.3


def test_stalled_request_times_out_and_is_retried(tiny_teacher_dir):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["stall"]), stall_seconds=4.0)
    with make_teacher(server, timeout=1.5) as teacher:
        start = time.monotonic()
        teacher.generate("hello")
        elapsed = time.monotonic() - start
    server.stop()
    assert (server.counts["stall"], server.counts["ok"]) == (1, 1)
    assert elapsed < 4.0


# worst case of "hello" with make_teacher's prices: (5 bytes + 16) * $1/1k + 3 * $2/1k
HELLO_WORST = 27_000_000


def unconfirmed_reasons(store):
    with store.engine.connect() as conn:
        query = select(charges.c.unconfirmed_reason).where(
            charges.c.unconfirmed_reason.is_not(None)
        )
        return list(conn.execute(query).scalars())


def test_exhausted_5xx_retries_are_charged_unconfirmed_at_the_worst_case(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["500"] * 4))
    with (
        make_teacher(server, store, budget=1.0) as teacher,
        pytest.raises(HTTPTeacherError, match="after 4 attempts: HTTP 500"),
    ):
        teacher.generate("hello")
    server.stop()
    status = store.ledger.status("default")
    assert (status.spent_nanos, status.unconfirmed_nanos) == (4 * HELLO_WORST, 4 * HELLO_WORST)
    assert status.reserved_nanos == 0
    assert unconfirmed_reasons(store) == ["HTTP 500"] * 4


def test_exhausted_429_retries_release_every_reservation(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["429"] * 4))
    with (
        make_teacher(server, store, budget=1.0) as teacher,
        pytest.raises(HTTPTeacherError, match="after 4 attempts: HTTP 429"),
    ):
        teacher.generate("hello")
    server.stop()
    status = store.ledger.status("default")
    assert (status.spent_nanos, status.reserved_nanos) == (0, 0)


def test_timeout_after_sending_is_an_unconfirmed_charge(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["stall"]), stall_seconds=1.0)
    with make_teacher(server, store, budget=1.0, timeout=0.5) as teacher:
        response = teacher.generate("hello")
    assert server.wait_idle()
    server.stop()
    status = store.ledger.status("default")
    assert status.unconfirmed_nanos == HELLO_WORST
    assert status.spent_nanos == HELLO_WORST + response.cost_nanos
    assert unconfirmed_reasons(store)[0].startswith("timed out after 0.5 s")
    assert len(server.billed) == 2  # the stalled answer was computed, hence billed


@pytest.mark.parametrize(("fault", "reason"), [("malformed", "malformed"), ("drop", "connection")])
def test_unusable_answer_after_sending_is_an_unconfirmed_charge(
    tiny_teacher_dir, store, fault, reason
):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=[fault]))
    with make_teacher(server, store, budget=1.0) as teacher:
        response = teacher.generate("hello")
    server.stop()
    status = store.ledger.status("default")
    assert (
        status.spent_nanos
        == HELLO_WORST + response.cost_nanos
        == store.ledger.charged_total("default")
    )
    assert status.unconfirmed_nanos == HELLO_WORST
    assert unconfirmed_reasons(store)[0].startswith(reason)
    assert teacher.counters.unconfirmed == 1


def test_connect_refused_releases_the_reservation(store):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = HTTPTeacherConfig(
        f"http://127.0.0.1:{port}/v1", "m", retry=FAST, budget=1.0, price_per_1k_prompt=1.0
    )
    with (
        HTTPTeacher(config, store=store) as teacher,
        pytest.raises(HTTPTeacherError, match="connection failed before sending"),
    ):
        teacher.generate("hello")
    status = store.ledger.status("default")
    assert (status.spent_nanos, status.reserved_nanos) == (0, 0)
    assert store.ledger.charged_total("default") == 0


def test_unconfirmed_request_answered_later_from_the_cache_is_not_charged_again(
    tiny_teacher_dir, store
):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["malformed"]))
    with make_teacher(server, store, budget=1.0) as teacher:
        first = teacher.generate("hello")
        spent = store.ledger.status("default").spent_nanos
        again = teacher.generate("hello")
    server.stop()
    assert (again.cached, again.body) == (True, first.body)
    assert store.ledger.status("default").spent_nanos == spent == HELLO_WORST + first.cost_nanos


def test_every_attempt_checks_the_cap_before_it_is_sent(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["malformed"]))
    with (
        make_teacher(server, store, budget=HELLO_WORST * 1.5 / 1e9) as teacher,
        pytest.raises(BudgetExhaustedError, match="exhausted"),
    ):
        teacher.generate("hello")
    server.stop()
    assert sum(server.counts.values()) == 1  # the retry did not fit, so it was not sent
    assert store.ledger.status("default").spent_nanos == HELLO_WORST


def test_rejected_key_is_not_retried_and_not_shown(tiny_teacher_dir):
    server = serve(tiny_teacher_dir)
    config = HTTPTeacherConfig(base_url=server.base_url, model="tiny", retry=FAST)
    with (
        HTTPTeacher(config, api_key="sk-wrong-key") as teacher,
        pytest.raises(HTTPTeacherError, match="refused the API key") as err,
    ):
        teacher.generate("hello")
    server.stop()
    assert "sk-wrong-key" not in str(err.value)
    assert server.counts["unauthorized"] == 1


def test_request_that_could_exceed_budget_is_never_sent(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir)
    # worst case: (5 bytes + 16) prompt tokens at $1/1k + 3 tokens at $2/1k = $0.027
    with (
        make_teacher(server, store, budget=0.02) as teacher,
        pytest.raises(BudgetExhaustedError, match="exhausted"),
    ):
        teacher.generate("hello")
    server.stop()
    assert sum(server.counts.values()) == 0


def test_missing_usage_gives_an_estimated_cost(tiny_teacher_dir, store, tokenizer):
    server = serve(tiny_teacher_dir, report_usage=False)
    with make_teacher(server, store, tokenizer) as teacher:
        response = teacher.generate("The quick brown fox")
    server.stop()
    n_prompt = len(tokenizer("The quick brown fox")["input_ids"])
    expected = -(-(n_prompt * 10**9 + 3 * 2 * 10**9) // 1000)
    assert (response.estimated, response.cost_nanos) == (True, expected)
    assert store.cache.get(response.key).estimated


def test_chat_api_returns_content_and_top_logprobs(tiny_teacher_dir):
    server = serve(tiny_teacher_dir)
    with make_teacher(server, api="chat") as teacher:
        response = teacher.generate("hello")
    server.stop()
    entries = response.body["choices"][0]["logprobs"]["content"]
    # the first answer measured the chat template's prompt tokens (chat_overhead)
    assert len(server.answered) == 2
    assert len(entries) == server.answered[1]["completion_tokens"]
    assert all(len(e["top_logprobs"]) == 2 for e in entries)


def test_chat_prompt_bound_counts_the_templates_tokens(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir)
    with make_teacher(server, store, api="chat") as teacher:
        overhead = teacher.chat_overhead()
        probe = server.answered[0]["prompt_tokens"]
        teacher.generate("hello")
    server.stop()
    assert overhead == probe - len(b"Hi")
    assert teacher.chat_overhead() == overhead  # measured once
    assert len(server.answered) == 2


def test_rpm_limit_spaces_requests(tiny_teacher_dir):
    server = serve(tiny_teacher_dir)
    with make_teacher(server, rpm=600, max_tokens=1) as teacher:
        start = time.monotonic()
        for i in range(4):
            teacher.generate(f"p{i}")
        elapsed = time.monotonic() - start
    server.stop()
    assert elapsed >= 0.3


def test_topk_matches_the_local_model_logprobs(tiny_teacher_dir, tokenizer, store):
    server = serve(tiny_teacher_dir)
    ids = torch.tensor([[5, 40, 41, 42], [3, 3, 50, 51]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    with make_teacher(server, store, tokenizer) as teacher:
        assert isinstance(teacher, Teacher)
        assert teacher.vocab_size == len(tokenizer)
        top = teacher.topk(ids, mask, k=3)
    server.stop()
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir).eval()
    with torch.no_grad():
        local = torch.log_softmax(model(ids[:1]).logits.float(), -1).topk(3)
        right = torch.log_softmax(model(ids[1:, 2:]).logits.float(), -1).topk(3)
    assert top.ids.shape == (2, 4, 3)
    assert torch.equal(top.ids[0], local.indices[0])
    assert torch.allclose(top.logprobs[0], local.values[0], atol=1e-5)
    assert torch.equal(top.ids[1, 2:], right.indices[0])
    assert torch.equal(top.ids[1, :2], torch.tensor([[0, 1, 2], [0, 1, 2]]))
    assert torch.equal(top.mask, mask.bool())


def test_budget_is_never_exceeded_under_concurrency_16(tiny_teacher_dir, store):
    faults = {"slow": 0.2, "500": 0.1, "stall": 0.1, "drop": 0.1, "malformed": 0.1, "429": 0.05}
    server = serve(
        tiny_teacher_dir,
        faults=FaultPlan(rates=faults, seed=1),
        slow_seconds=0.02,
        stall_seconds=1.0,
    )
    teacher = make_teacher(server, store, budget=0.2, concurrency=16, max_tokens=2, timeout=0.5)
    peak = [0]
    results, refused = [], []
    lock = threading.Lock()

    def work(i):
        try:
            r = teacher.generate(f"prompt number {i}")
        except BudgetExhaustedError:
            with lock:
                refused.append(i)
            return
        except HTTPTeacherError:
            return
        status = store.ledger.status("default")
        with lock:
            results.append(r)
            peak[0] = max(peak[0], status.spent_nanos + status.reserved_nanos)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    teacher.close()
    assert server.wait_idle()
    server.stop()
    status = store.ledger.status("default")
    cap = 200_000_000
    assert refused, "the budget should have stopped some requests"
    assert status.unconfirmed_nanos > 0, "the faults should have left unconfirmed charges"
    assert (
        status.spent_nanos
        == sum(r.cost_nanos for r in results) + status.unconfirmed_nanos
        == store.ledger.charged_total("default")
    )
    assert status.spent_nanos <= cap
    assert peak[0] <= cap
    assert status.reserved_nanos == 0
    billed = server.billed_nanos(1.0, 2.0)
    assert billed <= cap
    assert billed <= status.spent_nanos  # the ledger never undercounts what was billed


def test_api_key_never_reaches_logs_or_store(tiny_teacher_dir, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "keycheck.sqlite"
    store = open_store(sqlite_url(path))
    server = serve(tiny_teacher_dir, faults=FaultPlan(script=["429", "500"]))
    with make_teacher(server, store, budget=1.0) as teacher:
        teacher.generate("hello")
        assert KEY not in repr(teacher)
    server.stop()
    store.close()
    assert "retry" in caplog.text
    assert KEY not in caplog.text
    for f in tmp_path.iterdir():
        assert KEY.encode() not in f.read_bytes()


def test_budget_without_store_is_a_value_error():
    with pytest.raises(ValueError, match="needs a store"):
        HTTPTeacher(
            HTTPTeacherConfig("http://127.0.0.1:9/v1", "m", budget=1.0, price_per_1k_prompt=1.0)
        )


def test_budget_without_prices_is_refused():
    # at the default prices of 0 every request costs 0: the cap would limit nothing
    with pytest.raises(ValueError, match=r"budget: a budget needs prices: set price_per_1k_prompt"):
        HTTPTeacherConfig("http://127.0.0.1:9/v1", "m", budget=1.0)
    HTTPTeacherConfig("http://127.0.0.1:9/v1", "m", budget=1.0, price_per_1k_completion=1e-6)


@pytest.mark.parametrize(
    ("url", "form"),
    [
        ("https://user:sk-planted-1@api.example.com/v1", "user name and password"),
        ("https://sk-planted-1@api.example.com/v1", "user name before the host"),
        ("https://api.example.com/v1?api_key=sk-planted-1", "query parameter 'api_key'"),
        ("https://api.example.com/v1?x=1&access_token=sk-planted-1", "'access_token'"),
        ("https://api.example.com/v1?sig=sk-planted-1", "'sig'"),
    ],
)
def test_credential_in_base_url_is_refused_without_showing_it(url, form):
    with pytest.raises(ValueError, match=form) as err:
        HTTPTeacherConfig(url, "m")
    assert "sk-planted-1" not in str(err.value)


def test_base_url_query_without_a_credential_is_kept():
    url = "https://api.example.com/v1?api-version=2024-06-01"
    assert HTTPTeacherConfig(url, "m").base_url == url


@pytest.mark.parametrize("key", ["sk-abc\n", "sk abc", "sk-\u00e9t\u00e9", ""])
def test_api_key_a_header_cannot_carry_is_refused_without_showing_it(key):
    if not key:  # an empty key means no key
        HTTPTeacher(HTTPTeacherConfig("http://127.0.0.1:9/v1", "m"), api_key=key).close()
        return
    with pytest.raises(HTTPTeacherError, match="characters an HTTP header cannot carry") as err:
        HTTPTeacher(HTTPTeacherConfig("http://127.0.0.1:9/v1", "m"), api_key=key)
    assert key.strip() not in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("api", "edits"),
        ("max_tokens", 0),
        ("timeout", 0.0),
        ("budget", -1.0),
        ("scoring", "logits"),
    ],
)
def test_invalid_config_raises_value_error(field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        HTTPTeacherConfig("http://x/v1", "m", **{field: value})


def test_endpoint_billing_past_the_reservation_is_recorded_and_stops_the_run(
    tiny_teacher_dir, store
):
    # The provider ignores max_tokens: each answer bills 50 completion tokens more.
    server = serve(tiny_teacher_dir, extra_billed_tokens=50)
    with (
        make_teacher(server, store, budget=1.0) as teacher,
        pytest.raises(BudgetOverrunError, match=r"more than the \$0\.027000 reserved") as err,
    ):
        teacher.generate("hello")
    usage = server.answered[0]
    server.stop()
    billed = -(-(usage["prompt_tokens"] * 10**9 + usage["completion_tokens"] * 2 * 10**9) // 1000)
    assert err.value.billed == billed > err.value.reserved == HELLO_WORST
    status = store.ledger.status("default")
    assert (status.spent_nanos, status.reserved_nanos) == (billed, 0)  # the truth, not the cap
    with make_teacher(server, store, budget=1.0) as teacher:  # server stopped: cache only
        again = teacher.generate("hello")
    assert (again.cached, again.cost_nanos) == (True, 0)  # paid once, kept, not lost


def test_after_an_overrun_nothing_more_is_sent_or_reserved(tiny_teacher_dir, store):
    server = serve(tiny_teacher_dir, extra_billed_tokens=50)
    with make_teacher(server, store, budget=1.0) as teacher:
        with pytest.raises(BudgetOverrunError):
            teacher.generate("hello")
        with pytest.raises(BudgetOverrunError):
            teacher.generate("another prompt")
    server.stop()
    assert len(server.billed) == 1
    assert store.ledger.status("default").reserved_nanos == 0


def test_without_usage_or_logprobs_the_completion_is_counted_from_its_text(
    tiny_teacher_dir, store, tokenizer
):
    server = serve(tiny_teacher_dir, report_usage=False)
    with make_teacher(server, store, tokenizer, top_logprobs=0) as teacher:
        response = teacher.generate("The quick brown fox")
    server.stop()
    text = response.body["choices"][0]["text"]
    n_prompt = len(tokenizer("The quick brown fox")["input_ids"])
    n_completion = len(tokenizer(text)["input_ids"])
    assert n_completion > 0
    expected = -(-(n_prompt * 10**9 + n_completion * 2 * 10**9) // 1000)
    assert (response.estimated, response.cost_nanos) == (True, expected)


def test_scoring_token_ids_without_usage_is_billed_by_the_ids_sent(
    tiny_teacher_dir, store, tokenizer
):
    server = serve(tiny_teacher_dir, report_usage=False)
    ids = torch.tensor([[5, 40, 41, 42, 43, 44]])
    with make_teacher(server, store, tokenizer) as teacher:
        teacher.topk(ids, torch.ones_like(ids), k=2)
    server.stop()
    with store.engine.connect() as conn:
        rows = conn.execute(select(charges.c.cost_nanos, charges.c.estimated)).all()
    assert rows
    assert all(estimated for _, estimated in rows)
    # each scoring request is billed for its prompt's ids at least (1 nano-USD per token here)
    assert min(cost for cost, _ in rows) >= ids.shape[1] * 10**9 // 1000
