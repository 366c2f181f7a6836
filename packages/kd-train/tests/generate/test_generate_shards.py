"""``generate --shard I/N`` worker outputs and their merge (``merge-shards --dataset``)."""

import json

import pytest
from kd_train.cli import main
from kd_train.testing import FaultPlan, LoopbackTeacherServer, generate_argv


def generate(server, prompts, out, *extra, **options):
    return main([*generate_argv(server.base_url, prompts, out, **options), *extra])


def merge(out, prompts):
    return main(["merge-shards", "--dataset", str(out), "--prompts", str(prompts)])


def test_each_worker_answers_every_nth_prompt(server, prompts_file, tmp_path):
    out = tmp_path / "out.jsonl"
    assert generate(server, prompts_file, out, "--shard", "1/2") == 0
    part = tmp_path / "out.worker-1-of-2.jsonl"
    assert sorted(json.loads(x)["id"] for x in part.read_text().splitlines()) == ["p1", "p3", "p5"]
    assert not out.exists()


def test_merge_is_byte_identical_to_a_single_run(server, prompts_file, tmp_path, capsys):
    single = tmp_path / "single" / "out.jsonl"
    assert generate(server, prompts_file, single, concurrency=1) == 0
    out = tmp_path / "sharded" / "out.jsonl"
    for shard in ("2/3", "0/3", "1/3"):
        assert generate(server, prompts_file, out, "--shard", shard, concurrency=2) == 0
    capsys.readouterr()
    assert merge(out, prompts_file) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 6
    assert out.read_bytes() == single.read_bytes()
    assert not list(out.parent.glob("out.worker-*"))
    assert merge(out, prompts_file) == 0  # merged already: nothing to do, nothing changed
    assert out.read_bytes() == single.read_bytes()


def test_merge_refuses_a_missing_worker(server, prompts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert generate(server, prompts_file, out, "--shard", "0/2") == 0
    assert merge(out, prompts_file) == 2
    assert "out.worker-1-of-2.jsonl is missing" in capsys.readouterr().err
    assert not out.exists()


def test_merge_refuses_workers_of_another_teacher(server, prompts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert generate(server, prompts_file, out, "--shard", "0/2", max_tokens=2) == 0
    assert generate(server, prompts_file, out, "--shard", "1/2", max_tokens=3) == 0
    assert merge(out, prompts_file) == 2
    err = capsys.readouterr().err
    assert "teacher manifest differs" in err
    assert "out.worker-1-of-2.jsonl" in err


def test_merge_refuses_other_prompts(server, prompts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    for shard in ("0/2", "1/2"):
        assert generate(server, prompts_file, out, "--shard", shard) == 0
    other = tmp_path / "other.jsonl"
    other.write_text(prompts_file.read_text() + '{"id": "p9", "prompt": "more"}\n')
    assert merge(out, other) == 2
    assert "made from other prompts" in capsys.readouterr().err


def test_merge_refuses_a_worker_cut_short(server, prompts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    for shard in ("0/2", "1/2"):
        assert generate(server, prompts_file, out, "--shard", shard) == 0
    part = tmp_path / "out.worker-0-of-2.jsonl"
    part.write_text("".join(part.read_text().splitlines(keepends=True)[:2]))
    assert merge(out, prompts_file) == 2
    assert "out.worker-0-of-2.jsonl is unfinished (1 of 3 prompts" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["3/3", "x", "1/0"])
def test_a_bad_shard_is_refused_before_any_request(server, prompts_file, tmp_path, value, capsys):
    assert generate(server, prompts_file, tmp_path / "out.jsonl", "--shard", value) == 2
    assert "--shard" in capsys.readouterr().err
    assert sum(server.counts.values()) == 0
    assert not list(tmp_path.glob("out*"))


def test_shard_flag_must_agree_with_torchrun(server, prompts_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert generate(server, prompts_file, tmp_path / "out.jsonl", "--shard", "0/2") == 2
    assert "disagrees with torchrun" in capsys.readouterr().err
    assert generate(server, prompts_file, tmp_path / "out.jsonl") == 0
    assert (tmp_path / "out.worker-1-of-2.jsonl").is_file()


def test_quarantined_answers_merge_into_the_single_runs_quarantine(
    tiny_teacher_dir, prompts_file, tmp_path
):
    single, out = tmp_path / "single" / "out.jsonl", tmp_path / "sharded" / "out.jsonl"
    aside = "out.jsonl.quarantine.jsonl"
    with LoopbackTeacherServer(tiny_teacher_dir, faults=FaultPlan(rates={"empty": 1.0})) as srv:
        assert generate(srv, prompts_file, single, concurrency=1) == 0
        for shard in ("1/2", "0/2"):
            assert generate(srv, prompts_file, out, "--shard", shard, concurrency=2) == 0
    assert merge(out, prompts_file) == 0
    assert len(single.with_name(aside).read_text().splitlines()) == 6
    assert out.with_name(aside).read_bytes() == single.with_name(aside).read_bytes()
    assert out.read_bytes() == single.read_bytes() == b""


def test_a_worker_output_cut_mid_line_or_with_a_bad_line_is_refused(
    server, prompts_file, tmp_path, capsys
):
    out = tmp_path / "out.jsonl"
    for shard in ("0/2", "1/2"):
        assert generate(server, prompts_file, out, "--shard", shard) == 0
    part = tmp_path / "out.worker-1-of-2.jsonl"
    good = part.read_bytes()
    part.write_bytes(good + b'{"id": "p')
    assert merge(out, prompts_file) == 2
    assert "ends in a partial line" in capsys.readouterr().err
    part.write_bytes(good + b"[1, 2]\n")
    assert merge(out, prompts_file) == 2
    assert "not a JSON object with an id" in capsys.readouterr().err
    first = good.splitlines(keepends=True)[0]
    part.write_bytes(good + first)
    assert merge(out, prompts_file) == 2
    assert "written twice" in capsys.readouterr().err
    assert not out.exists()


def test_a_worker_output_with_another_workers_prompts_is_refused(
    server, prompts_file, tmp_path, capsys
):
    out = tmp_path / "out.jsonl"
    for shard in ("0/2", "1/2"):
        assert generate(server, prompts_file, out, "--shard", shard) == 0
    zero, one = tmp_path / "out.worker-0-of-2.jsonl", tmp_path / "out.worker-1-of-2.jsonl"
    theirs = zero.read_bytes().splitlines(keepends=True)[0]
    one.write_bytes(one.read_bytes() + theirs)
    assert merge(out, prompts_file) == 2
    assert "outside its share" in capsys.readouterr().err


def test_merge_never_overwrites_another_dataset(server, prompts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    for shard in ("0/2", "1/2"):
        assert generate(server, prompts_file, out, "--shard", shard) == 0
    out.write_text('{"id": "from another run"}\n')
    assert merge(out, prompts_file) == 2
    assert "exists with other content" in capsys.readouterr().err
    assert out.read_text() == '{"id": "from another run"}\n'
