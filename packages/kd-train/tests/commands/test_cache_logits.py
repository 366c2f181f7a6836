import json

import pytest
from kd_train.cli import main
from kd_train.commands.cache_logits import build_cache
from kd_train.data.jsonl import write_records
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import TokenizeConfig
from kd_train.errors import KDTrainError
from kd_train.teachers.cached import (
    MANIFEST,
    PARTIAL_MANIFEST,
    CachedTeacher,
    CacheError,
    IncompleteCacheError,
    read_manifest,
)
from kd_train.teachers.fingerprint import dataset_fingerprint, tokenizer_fingerprint
from kd_train.teachers.hf import HFTeacher
from kd_train.testing import InterruptedTeacher

RECORDS = [KDRecord(f"q{i}", f"Say {i}:", f" {i} and {i + 1}.") for i in range(10)]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return HFTeacher.from_pretrained(tiny_teacher_dir)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_records(path, RECORDS)
    return path


def build(teacher, dataset, out, **options):
    settings = {"k": 6, "shard_size": 4, "batch_size": 2, "progress": False, **options}
    return build_cache(
        teacher, RECORDS, out, dataset_fingerprint=dataset_fingerprint(dataset), **settings
    )


def interrupt_after_first_shard(teacher, dataset, out):
    # 4 records per shard, 2 per batch: the third forward pass is the second shard's first.
    with pytest.raises(KeyboardInterrupt):
        build(InterruptedTeacher(teacher, stop_at=3), dataset, out)


def test_cli_builds_a_cache_and_prints_a_summary(tiny_teacher_dir, dataset, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["cache-logits", "--teacher", str(tiny_teacher_dir), "--data", str(dataset)]
    assert main([*argv, "--out", str(out), "--k", "4", "--shard-size", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 10
    assert summary["shards"] == 4
    assert summary["bytes_per_token"] == pytest.approx(read_manifest(out).bytes_per_token, 1e-3)
    teacher = HFTeacher.from_pretrained(tiny_teacher_dir)
    cached = CachedTeacher.open(
        out,
        tokenizer_fingerprint=tokenizer_fingerprint(teacher.tokenizer),
        dataset_fingerprint=dataset_fingerprint(dataset),
    )
    assert cached.k == 4


def test_interrupted_build_leaves_no_manifest_and_is_reported_incomplete(
    teacher, dataset, tmp_path
):
    out = tmp_path / "cache"
    interrupt_after_first_shard(teacher, dataset, out)
    assert not (out / MANIFEST).exists()
    assert (out / "shard-00000.safetensors").is_file()
    assert not (out / "shard-00001.safetensors").exists()
    with pytest.raises(IncompleteCacheError, match="rerun kd-train cache-logits"):
        read_manifest(out)


def test_resume_keeps_finished_shards_and_reproduces_an_uninterrupted_build(
    teacher, dataset, tmp_path
):
    reference = build(teacher, dataset, tmp_path / "reference")
    out = tmp_path / "cache"
    interrupt_after_first_shard(teacher, dataset, out)
    first = (out / "shard-00000.safetensors").stat()
    resumed = build(teacher, dataset, out)
    kept = (out / "shard-00000.safetensors").stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert resumed.shards == reference.shards
    assert resumed.records == reference.records
    assert not (out / PARTIAL_MANIFEST).exists()


def test_resume_recomputes_a_finished_shard_whose_hash_no_longer_matches(
    teacher, dataset, tmp_path
):
    reference = build(teacher, dataset, tmp_path / "reference")
    out = tmp_path / "cache"
    interrupt_after_first_shard(teacher, dataset, out)
    (out / "shard-00000.safetensors").write_bytes(b"garbage")
    resumed = build(teacher, dataset, out)
    assert resumed.shards == reference.shards


def test_resume_removes_temp_files_of_a_killed_write(teacher, dataset, tmp_path):
    out = tmp_path / "cache"
    interrupt_after_first_shard(teacher, dataset, out)
    stale = out / ".shard-00001.safetensors.abc123.tmp"
    stale.write_bytes(b"half a shard")
    build(teacher, dataset, out)
    assert not stale.exists()


def test_rerun_of_a_complete_cache_rewrites_nothing(teacher, dataset, tmp_path):
    out = tmp_path / "cache"
    build(teacher, dataset, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    build(teacher, dataset, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_cache_directory_made_with_other_settings_is_refused(teacher, dataset, tmp_path):
    out = tmp_path / "cache"
    build(teacher, dataset, out, k=6)
    with pytest.raises(CacheError, match="k: 6 there, 3 now"):
        build(teacher, dataset, out, k=3)


def test_partial_cache_made_with_other_settings_is_refused(teacher, dataset, tmp_path):
    out = tmp_path / "cache"
    interrupt_after_first_shard(teacher, dataset, out)
    with pytest.raises(CacheError, match="shard_size: 4 there, 5 now"):
        build(teacher, dataset, out, shard_size=5)


def test_max_length_truncates_the_cached_sequences(teacher, dataset, tmp_path):
    manifest = build(teacher, dataset, tmp_path / "cache", tokenize=TokenizeConfig(max_length=10))
    assert max(r.length for r in manifest.records.values()) == 10
    assert all(r.row_end - r.row_start == r.length - 1 - r.start for r in manifest.records.values())


def test_without_eos_each_record_has_one_row_fewer(teacher, dataset, tmp_path):
    with_eos = build(teacher, dataset, tmp_path / "a")
    without = build(teacher, dataset, tmp_path / "b", tokenize=TokenizeConfig(add_eos=False))
    for rid, entry in with_eos.records.items():
        other = without.records[rid]
        assert other.row_end - other.row_start == entry.row_end - entry.row_start - 1


def test_empty_dataset_is_refused(teacher, dataset, tmp_path):
    with pytest.raises(KDTrainError, match="no records"):
        build_cache(teacher, [], tmp_path / "c", k=4, dataset_fingerprint="sha256:0")


def test_k_larger_than_the_vocabulary_is_refused(teacher, dataset, tmp_path):
    with pytest.raises(KDTrainError, match=r"--k must be in 1\.\.320"):
        build(teacher, dataset, tmp_path / "c", k=321)


def run_cli(capsys, *argv):
    code = main(["cache-logits", *argv])
    return code, capsys.readouterr().err


def test_cli_rejects_k_below_one_without_a_traceback(tiny_teacher_dir, dataset, tmp_path, capsys):
    args = ["--teacher", str(tiny_teacher_dir), "--data", str(dataset), "--out", str(tmp_path)]
    code, err = run_cli(capsys, *args, "--k", "0")
    assert code == 2
    assert "--k must be >= 1, got 0" in err
    assert "Traceback" not in err


def test_cli_names_a_missing_dataset(tiny_teacher_dir, tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    args = ["--teacher", str(tiny_teacher_dir), "--data", str(missing), "--out", str(tmp_path)]
    code, err = run_cli(capsys, *args, "--k", "4")
    assert code == 2
    assert "missing.jsonl does not exist" in err


def test_cli_names_a_student_tokenizer_directory_without_a_tokenizer(
    tiny_teacher_dir, dataset, tmp_path, capsys
):
    empty = tmp_path / "not-a-tokenizer"
    empty.mkdir()
    (empty / "notes.txt").write_text("no tokenizer here")
    args = [
        "--teacher",
        str(tiny_teacher_dir),
        "--data",
        str(dataset),
        "--out",
        str(tmp_path / "c"),
    ]
    code, err = run_cli(capsys, *args, "--k", "4", "--student-tokenizer", str(empty))
    assert code == 2
    assert f"--student-tokenizer: cannot load a tokenizer from {empty}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_cli_names_the_file_and_line_of_a_bad_record(tiny_teacher_dir, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    write_records(data, RECORDS[:2])
    data.write_text(data.read_text() + "{not json\n")
    args = ["--teacher", str(tiny_teacher_dir), "--data", str(data), "--out", str(tmp_path / "c")]
    code, err = run_cli(capsys, *args, "--k", "4")
    assert code == 2
    assert "bad.jsonl:3" in err


def test_cli_names_a_missing_teacher_directory(dataset, tmp_path, capsys):
    args = ["--teacher", str(tmp_path / "no-teacher"), "--data", str(dataset)]
    code, err = run_cli(capsys, *args, "--out", str(tmp_path / "c"), "--k", "4")
    assert code == 2
    assert "no-teacher does not exist" in err


def test_teacher_without_a_tokenizer_is_refused(teacher, dataset, tmp_path):
    with pytest.raises(KDTrainError, match="no tokenizer"):
        build(HFTeacher(teacher.model, source=teacher.source), dataset, tmp_path / "c")
