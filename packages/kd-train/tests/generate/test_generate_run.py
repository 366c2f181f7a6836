import json

import pytest
from kd_train.errors import KDTrainError
from kd_train.generate import generate_dataset, read_prompts
from kd_train.generate.manifest import TeacherSettings, check_teacher, manifest_path
from kd_train.store import open_store, sqlite_url
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig
from kd_train.teachers.retry import RetryPolicy
from kd_train.testing import FaultPlan
from transformers import AutoTokenizer


@pytest.fixture
def store(tmp_path):
    s = open_store(sqlite_url(tmp_path / "store.sqlite"))
    yield s
    s.close()


def teacher_for(server, store, **overrides):
    settings = {
        "base_url": server.base_url,
        "model": "tiny",
        "max_tokens": 3,
        "top_logprobs": 2,
        "concurrency": 3,
        "retry": RetryPolicy(max_attempts=2, base_delay=0.0),
        "price_per_1k_prompt": 1.0,
        "price_per_1k_completion": 1.0,
    }
    settings.update(overrides)
    return HTTPTeacher(HTTPTeacherConfig(**settings), store=store)


def ids_in(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_every_prompt_is_written_once(server, store, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    with teacher_for(server, store) as teacher:
        summary = generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
    assert sorted(ids_in(out)) == [f"p{i}" for i in range(6)]
    assert (summary.written, summary.paid, summary.complete) == (6, 6, True)


def test_rerun_skips_prompts_already_in_the_output(server, store, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    with teacher_for(server, store) as teacher:
        check_teacher(out, TeacherSettings.of(teacher.config, None), has_records=False)
        out.write_text('{"id": "p0", "prompt": "x", "completion": "y"}\n{"id": "p1", "pro')
        summary = generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
    assert sorted(ids_in(out)) == [f"p{i}" for i in range(6)]
    assert (summary.already_written, summary.written) == (1, 5)
    assert server.counts["ok"] == 5


def test_responses_paid_before_a_crash_come_from_the_cache(server, store, prompts_file, tmp_path):
    prompts = read_prompts(prompts_file)
    with teacher_for(server, store) as teacher:
        teacher.generate(prompts[0].prompt)  # paid, then "killed" before writing
        summary = generate_dataset(prompts, teacher, tmp_path / "out.jsonl", progress=False)
    assert (summary.cache_hits, summary.paid, server.counts["ok"]) == (1, 5, 6)


def test_budget_stop_writes_what_was_paid_and_reports(server, store, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    # worst case per prompt: (11 bytes + 16) + 3 tokens at $1/1k = $0.03; actual ~ $0.012
    with teacher_for(server, store, budget=0.07, concurrency=1) as teacher:
        summary = generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
    assert "exhausted" in str(summary.budget_stop)
    assert 2 <= len(ids_in(out)) == summary.written < 6
    spent = store.ledger.status("default").spent_nanos
    assert spent == round(summary.spent_usd * 1e9)
    assert spent <= 70_000_000


def test_failed_prompts_are_counted_and_left_for_a_rerun(server, store, prompts_file, tmp_path):
    server.faults = FaultPlan(script=["500", "500"])
    out = tmp_path / "out.jsonl"
    with teacher_for(server, store, concurrency=1) as teacher:
        summary = generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
    assert (summary.failed, summary.written, summary.complete) == (1, 5, False)


def test_unconfirmed_spend_is_reported_apart_from_the_confirmed(
    server, store, prompts_file, tmp_path
):
    server.faults = FaultPlan(script=["malformed"])
    out = tmp_path / "out.jsonl"
    with teacher_for(server, store, concurrency=1) as teacher:
        summary = generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
    # worst case of "The quick 0": (11 bytes + 16) + 3 tokens at $1/1k
    assert summary.unconfirmed_usd == pytest.approx(0.03)
    spent = store.ledger.status("default").spent_nanos
    assert spent == round((summary.spent_usd + summary.unconfirmed_usd) * 1e9)


def test_top_logprobs_become_token_ids_with_a_tokenizer(server, store, prompts_file, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(server.model.tokenizer.name_or_path)
    out = tmp_path / "out.jsonl"
    with teacher_for(server, store) as teacher:
        summary = generate_dataset(
            read_prompts(prompts_file), teacher, out, tokenizer=tokenizer, progress=False
        )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    mapped = [r for r in records if "teacher_topk" in r]
    assert mapped
    for record in mapped:
        topk = record["teacher_topk"]
        greedy, _ = server.model.run(server.model.encode(record["prompt"]), 3)
        assert [row[0] for row in topk["ids"]] == greedy
        assert record["metadata"]["teacher_chosen"] == greedy
        assert all(len(row) == 2 for row in topk["ids"])
        assert all(lp <= 0 for row in topk["logprobs"] for lp in row)
    # the random tiny model may generate part of a UTF-8 character: the text then holds
    # U+FFFD, the tokens' bytes do not join into it, and the record is marked, not shrunk
    for record in (r for r in records if "teacher_topk" not in r):
        assert "\ufffd" in record["completion"]
        assert "join" in record["metadata"]["teacher_topk_unmapped"]["reason"]
    assert summary.topk_unmapped == len(records) - len(mapped)


def test_without_tokenizer_top_tokens_are_kept_as_strings(server, store, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    with teacher_for(server, store) as teacher:
        generate_dataset(read_prompts(prompts_file)[:1], teacher, out, progress=False)
    record = json.loads(out.read_text())
    assert "teacher_topk" not in record
    top = record["metadata"]["teacher_top_logprobs"]
    assert all(isinstance(t, str) for row in top["tokens"] for t in row)


def test_append_with_another_teacher_is_refused_naming_each_setting(
    server, store, prompts_file, tmp_path
):
    out = tmp_path / "out.jsonl"
    prompts = read_prompts(prompts_file)
    with teacher_for(server, store) as teacher:
        generate_dataset(prompts[:2], teacher, out, progress=False)
    before = out.read_bytes()
    with (
        teacher_for(server, store, model="other", max_tokens=5) as teacher,
        pytest.raises(KDTrainError, match=r"another teacher: max_tokens 3 -> 5, model 'tiny' -> "),
    ):
        generate_dataset(prompts, teacher, out, progress=False)
    assert out.read_bytes() == before  # nothing appended


def test_append_that_stores_top_k_differently_is_refused(server, store, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = read_prompts(prompts_file)
    tokenizer = server.model.tokenizer
    with teacher_for(server, store) as teacher:
        generate_dataset(prompts[:2], teacher, out, progress=False)
        with pytest.raises(KDTrainError, match=r"topk_ids 'strings' -> 'sha256:"):
            generate_dataset(prompts, teacher, out, tokenizer=tokenizer, progress=False)


def test_same_teacher_appends_and_the_manifest_names_it(server, store, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = read_prompts(prompts_file)
    with teacher_for(server, store) as teacher:
        generate_dataset(prompts[:2], teacher, out, progress=False)
    with teacher_for(server, store, concurrency=1, price_per_1k_prompt=2.0) as teacher:
        summary = generate_dataset(prompts, teacher, out, progress=False)
    assert (summary.already_written, summary.written) == (2, 4)
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["teacher"]["model"] == "tiny"
    assert manifest["base_url"] == server.base_url


def test_output_with_records_and_no_manifest_is_refused(server, store, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "p0", "prompt": "x", "completion": "y"}\n')
    with (
        teacher_for(server, store) as teacher,
        pytest.raises(KDTrainError, match=r"no teacher manifest out\.jsonl\.teacher\.json"),
    ):
        generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
