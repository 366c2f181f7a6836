"""Answers no record can be made of are quarantined at generation time, with the reason."""

import json

import pytest
from kd_train.generate import generate_dataset, read_prompts
from kd_train.generate.run import quarantine_path, quarantined_ids
from kd_train.store import open_store, sqlite_url
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig
from kd_train.teachers.retry import RetryPolicy
from kd_train.testing import FaultPlan, LoopbackTeacherServer


@pytest.fixture
def store(tmp_path):
    s = open_store(sqlite_url(tmp_path / "store.sqlite"))
    yield s
    s.close()


def make_teacher(server, store, api="completions"):
    config = HTTPTeacherConfig(
        server.base_url,
        "tiny",
        api=api,
        max_tokens=3,
        top_logprobs=2,
        concurrency=1,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0),
        price_per_1k_prompt=1.0,
        price_per_1k_completion=1.0,
    )
    return HTTPTeacher(config, store=store)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_empty_completions_are_quarantined_with_the_reason_and_counted(
    tiny_teacher_dir, store, prompts_file, tmp_path, api
):
    out = tmp_path / "out.jsonl"
    # chat measures its template first: one more request ahead of the prompts
    script = (["ok"] if api == "chat" else []) + ["empty", "ok", "empty", "ok", "ok", "ok"]
    plan = FaultPlan(script=script)
    with (
        LoopbackTeacherServer(tiny_teacher_dir, faults=plan) as server,
        make_teacher(server, store, api) as teacher,
    ):
        summary = generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
    written = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    rows = [json.loads(line) for line in quarantine_path(out).read_text().splitlines()]
    assert (summary.written, summary.quarantined, summary.complete) == (4, 2, True)
    assert sorted(written + [r["id"] for r in rows]) == [f"p{i}" for i in range(6)]
    assert all(r["code"] == "unusable_completion" for r in rows)
    assert all("empty completion (0 tokens, finish_reason 'stop')" in r["reason"] for r in rows)


def test_a_rerun_does_not_ask_for_quarantined_prompts_again(
    tiny_teacher_dir, store, prompts_file, tmp_path
):
    out = tmp_path / "out.jsonl"
    with (
        LoopbackTeacherServer(tiny_teacher_dir, faults=FaultPlan(script=["empty"])) as server,
        make_teacher(server, store) as teacher,
    ):
        generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
        before = server.counts["ok"] + server.counts["empty"]
        again = generate_dataset(read_prompts(prompts_file), teacher, out, progress=False)
        assert server.counts["ok"] + server.counts["empty"] == before
    assert (again.already_written, again.already_quarantined, again.complete) == (5, 1, True)


def test_a_partial_quarantine_line_from_a_kill_is_cut_off(tmp_path):
    path = tmp_path / "out.jsonl.quarantine.jsonl"
    path.write_bytes(b'{"id": "a", "code": "unusable_completion"}\n{"id": "b", "co')
    assert quarantined_ids(path) == {"a"}
    assert path.read_bytes().endswith(b"}\n")
