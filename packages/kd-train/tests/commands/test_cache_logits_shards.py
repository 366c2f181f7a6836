"""``cache-logits --shard I/N`` workers, merged by ``merge-shards``, equal one single run."""

import hashlib
import json
import shutil

import pytest
from kd_train.cli import main
from kd_train.commands.cache_logits import build_cache
from kd_train.data.jsonl import write_records
from kd_train.data.schema import KDRecord
from kd_train.models import llama_config, save_random_llama, train_tokenizer
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.shards import ShardError, WorkerShard, merge_cache, shard_from
from kd_train.teachers.cached import MANIFEST
from kd_train.teachers.fingerprint import dataset_fingerprint
from kd_train.teachers.hf import HFTeacher
from kd_train.testing import InterruptedTeacher

RECORDS = [KDRecord(f"q{i}", f"Say {i}:", f" {i} and {i + 1}.") for i in range(11)]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return HFTeacher.from_pretrained(tiny_teacher_dir)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_records(path, RECORDS)
    return path


def build(teacher, dataset, out, worker=None, **options):
    settings = {"k": 5, "shard_size": 2, "batch_size": 2, "progress": False, **options}
    return build_cache(
        teacher,
        RECORDS,
        out,
        dataset_fingerprint=dataset_fingerprint(dataset),
        worker=worker,
        **settings,
    )


def digests(directory):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def workers(teacher, dataset, out, count=2, **options):
    for index in range(count):
        build(teacher, dataset, out, WorkerShard(index, count), **options)


@pytest.mark.parametrize("count", [2, 3])
def test_merged_workers_are_byte_identical_to_a_single_run(teacher, dataset, tmp_path, count):
    build(teacher, dataset, tmp_path / "single")
    workers(teacher, dataset, tmp_path / "sharded", count)
    merged = merge_cache(tmp_path / "sharded")
    assert len(merged.shards) == 6
    assert digests(tmp_path / "sharded") == digests(tmp_path / "single")
    assert not list((tmp_path / "sharded").glob("worker-*"))


def test_each_worker_computes_only_its_own_shards(teacher, dataset, tmp_path):
    build(teacher, dataset, tmp_path, WorkerShard(1, 2))
    files = sorted(p.name for p in (tmp_path / "worker-1-of-2").glob("shard-*"))
    assert files == [
        "shard-00001.safetensors",
        "shard-00003.safetensors",
        "shard-00005.safetensors",
    ]


def test_worker_interrupted_then_resumed_merges_to_the_single_run(teacher, dataset, tmp_path):
    build(teacher, dataset, tmp_path / "single")
    out = tmp_path / "sharded"
    build(teacher, dataset, out, WorkerShard(0, 2))
    with pytest.raises(KeyboardInterrupt):  # its second shard's forward pass
        build(InterruptedTeacher(teacher, stop_at=2), dataset, out, WorkerShard(1, 2))
    with pytest.raises(ShardError, match="worker-1-of-2 is unfinished"):
        merge_cache(out)
    build(teacher, dataset, out, WorkerShard(1, 2))
    merge_cache(out)
    assert digests(out) == digests(tmp_path / "single")


def test_merge_refuses_a_missing_worker(teacher, dataset, tmp_path):
    build(teacher, dataset, tmp_path, WorkerShard(0, 3))
    build(teacher, dataset, tmp_path, WorkerShard(2, 3))
    with pytest.raises(ShardError, match="worker-1-of-3 is missing"):
        merge_cache(tmp_path)
    assert not (tmp_path / MANIFEST).exists()


def test_merge_refuses_a_duplicated_worker(teacher, dataset, tmp_path):
    workers(teacher, dataset, tmp_path)
    shutil.copytree(tmp_path / "worker-0-of-2", tmp_path / "worker-0-of-2.old")
    with pytest.raises(ShardError, match=r"worker 0 is duplicated: .*worker-0-of-2\.old"):
        merge_cache(tmp_path)


def test_merge_refuses_a_renamed_worker(teacher, dataset, tmp_path):
    build(teacher, dataset, tmp_path, WorkerShard(0, 2))
    shutil.copytree(tmp_path / "worker-0-of-2", tmp_path / "worker-1-of-2")
    with pytest.raises(ShardError, match="worker-1-of-2: its worker record says worker 0"):
        merge_cache(tmp_path)


def test_merge_refuses_workers_of_runs_with_different_n(teacher, dataset, tmp_path):
    workers(teacher, dataset, tmp_path)
    build(teacher, dataset, tmp_path, WorkerShard(0, 3))
    with pytest.raises(ShardError, match="different N"):
        merge_cache(tmp_path)


def test_merge_refuses_workers_made_with_other_settings(teacher, dataset, tmp_path):
    build(teacher, dataset, tmp_path, WorkerShard(0, 2))
    build(teacher, dataset, tmp_path, WorkerShard(1, 2), k=4)
    with pytest.raises(ShardError, match=r"config differs: .*worker-1-of-2: .*'k': 4"):
        merge_cache(tmp_path)


def test_merge_refuses_a_worker_shard_file_that_was_altered(teacher, dataset, tmp_path):
    workers(teacher, dataset, tmp_path)
    shard = tmp_path / "worker-1-of-2" / "shard-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-2] + b"\0\0")
    with pytest.raises(Exception, match=r"worker-1-of-2/shard-00003.safetensors is corrupted"):
        merge_cache(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("2/2", "0 <= I < N"), ("0/0", "N >= 1"), ("a/b", "is not I/N"), ("-1/2", "is not I/N")],
)
def test_a_bad_shard_value_is_refused(text, message):
    with pytest.raises(ShardError, match=message):
        WorkerShard.parse(text)


def test_torchrun_environment_gives_the_shard_and_must_agree_with_the_flag():
    env = {"RANK": "1", "WORLD_SIZE": "3"}
    assert shard_from(None, env) == WorkerShard(1, 3)
    assert shard_from("1/3", env) == WorkerShard(1, 3)
    assert shard_from(None, {"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert shard_from("0/2", {}) == WorkerShard(0, 2)
    with pytest.raises(ShardError, match="disagrees with torchrun"):
        shard_from("0/3", env)


def test_cli_refuses_a_bad_shard_in_one_line(tiny_teacher_dir, dataset, tmp_path, capsys):
    argv = ["cache-logits", "--teacher", str(tiny_teacher_dir), "--data", str(dataset)]
    assert main([*argv, "--out", str(tmp_path / "c"), "--k", "4", "--shard", "2/2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--shard 2/2" in err
    assert "0 <= I < N" in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_cli_workers_and_merge_make_the_single_runs_cache(
    tiny_teacher_dir, dataset, tmp_path, capsys
):
    argv = ["cache-logits", "--teacher", str(tiny_teacher_dir), "--data", str(dataset)]
    argv += ["--k", "4", "--shard-size", "3", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    for shard in ("1/2", "0/2"):
        assert main([*argv, "--out", str(tmp_path / "sharded"), "--shard", shard]) == 0
    capsys.readouterr()
    assert main(["merge-shards", "--cache", str(tmp_path / "sharded")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 11
    assert summary["shards"] == 4
    assert digests(tmp_path / "sharded") == digests(tmp_path / "single")


def test_a_sharded_cross_tokenizer_cache_merges_to_the_single_run(tiny_llama_dir, tmp_path):
    # A teacher with its own tokenizer; the student's tokenizer is tiny_llama_dir's.
    corpus = ("Pack my box with five dozen liquor jugs.", "def mul(x, y): return x * y 0123")
    tok = train_tokenizer(corpus, vocab_size=300)
    teacher_dir = tmp_path / "teacher"
    save_random_llama(teacher_dir, llama_config(len(tok), hidden_size=32), tok, seed=2)
    data = write_jsonl(tmp_path / "train.jsonl", tool_call_records(7, seed=1))
    argv = ["cache-logits", "--teacher", str(teacher_dir), "--data", str(data), "--k", "4"]
    argv += ["--shard-size", "2", "--no-progress", "--student-tokenizer", str(tiny_llama_dir)]
    assert main([*argv, "--out", str(tmp_path / "single")]) == 0
    for shard in ("0/2", "1/2"):
        assert main([*argv, "--out", str(tmp_path / "sharded"), "--shard", shard]) == 0
    assert main(["merge-shards", "--cache", str(tmp_path / "sharded")]) == 0
    assert digests(tmp_path / "sharded") == digests(tmp_path / "single")
    # and the single run itself is reproducible, its cross-tokenizer index included
    assert main([*argv, "--out", str(tmp_path / "again")]) == 0
    assert digests(tmp_path / "again") == digests(tmp_path / "single")


# ---- hostile worker outputs: each refusal names what is wrong ------------------------------


def test_torchrun_environment_that_is_not_numbers_is_refused():
    with pytest.raises(ShardError, match="RANK"):
        shard_from(None, {"RANK": "one", "WORLD_SIZE": "2"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "unreadable worker record"),
        ('["a list"]', "not a kd-train worker record"),
        ('{"format": "something-else/1"}', "not a kd-train worker record"),
    ],
)
def test_a_damaged_worker_record_is_refused(teacher, dataset, tmp_path, body, message):
    workers(teacher, dataset, tmp_path)
    (tmp_path / "worker-1-of-2" / "worker.json").write_text(body)
    with pytest.raises(ShardError, match=message):
        merge_cache(tmp_path)


def test_a_worker_record_without_integer_counts_is_refused(teacher, dataset, tmp_path):
    workers(teacher, dataset, tmp_path)
    path = tmp_path / "worker-1-of-2" / "worker.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "index": 1.0}))  # equal to 1, not an integer
    with pytest.raises(ShardError, match="index and count must be integers"):
        merge_cache(tmp_path)
    path.write_text(json.dumps(record))
    for name in ("worker-0-of-2", "worker-1-of-2"):  # both agree, on a non-number
        each = tmp_path / name / "worker.json"
        each.write_text(json.dumps({**json.loads(each.read_text()), "records": "nine"}))
    with pytest.raises(ShardError, match="'records' must be an integer"):
        merge_cache(tmp_path)


def test_a_worker_holding_shards_it_does_not_own_is_refused(teacher, dataset, tmp_path):
    workers(teacher, dataset, tmp_path)
    one, zero = tmp_path / "worker-1-of-2", tmp_path / "worker-0-of-2"
    manifest = json.loads((one / MANIFEST).read_text())
    theirs = json.loads((zero / MANIFEST).read_text())["shards"][0]
    manifest["shards"] = [theirs, *manifest["shards"][1:]]
    (one / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="worker-1-of-2"):
        merge_cache(tmp_path)


def test_a_merged_cache_is_merged_once(teacher, dataset, tmp_path):
    workers(teacher, dataset, tmp_path)
    first = merge_cache(tmp_path)
    before = digests(tmp_path)
    assert merge_cache(tmp_path) == first  # no worker left: the merged manifest, unchanged
    assert digests(tmp_path) == before
