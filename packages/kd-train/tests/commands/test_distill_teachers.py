"""``kd-train distill`` reaches every teacher kind: hf, cached, records, http (and none).

Each test writes a YAML run config and runs the CLI in-process on the tiny shared models;
the teacher of the cached, records and http runs is the same tiny ``hf`` teacher, so their
losses can be compared with the ``hf`` run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kd_train.cli import main
from kd_train.data import read_records
from kd_train.data.schema import TeacherTopK
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.teachers.cached import CachedTeacher, read_manifest
from kd_train.testing import LoopbackTeacherServer

MAX_LENGTH = 160
K = 8


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "train.jsonl", tool_call_records(16))
    return tmp_path


def distill(workdir: Path, name: str, teacher: dict[str, Any], student: Path, **extra: Any):
    cfg: dict[str, Any] = {
        "student": {"path": str(student)},
        "teacher": teacher,
        "data": {"train": "train.jsonl", "eval_fraction": 0.25, "max_length": MAX_LENGTH},
        "loss": {"weights": {"kd": 1.0}},
        "optim": {"lr": 0.0},  # the student stays at its init: losses are comparable
        "train": {"max_steps": 2, "batch_size": 4, "threads": 1, "eval_every": 2},
        "output_dir": name,
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--no-progress"]) == 0
    return read_metrics(workdir / name)


def http_teacher(server: LoopbackTeacherServer, **http: Any) -> dict[str, Any]:
    """The ``teacher`` section of an ``http`` run against ``server`` (top-``K``)."""
    return {
        "kind": "http",
        "topk": K,
        "http": {"base_url": server.base_url, "model": "tiny", **http},
    }


def cache_of(workdir: Path, teacher_dir: Path, k: int = K) -> Path:
    out = workdir / "cache"
    argv = ["cache-logits", "--teacher", str(teacher_dir), "--data", "train.jsonl"]
    argv += ["--out", str(out), "--k", str(k), "--max-length", str(MAX_LENGTH)]
    assert main([a if a != "train.jsonl" else str(workdir / a) for a in argv]) == 0
    return out


def records_from_cache(workdir: Path, cache_dir: Path) -> None:
    """Write ``records.jsonl``: the train records with the cache's rows as ``teacher_topk``."""
    manifest = read_manifest(cache_dir)
    cache = CachedTeacher(cache_dir, manifest)
    rows = []
    for record in read_records(workdir / "train.jsonl"):
        ids, logprobs, _tail = cache.for_record(record.id).topk_parts()
        topk = TeacherTopK(ids[0].tolist(), logprobs[0].tolist())  # completion tokens + eos
        rows.append(json.loads(json.dumps({**record.to_dict(), "teacher_topk": topk.to_dict()})))
    (workdir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_hf_teacher_trains_through_the_cli(workdir, tiny_llama_dir, tiny_teacher_dir):
    rows = distill(workdir, "hf", {"kind": "hf", "path": str(tiny_teacher_dir)}, tiny_llama_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["kd"] > 0 for r in rows)
    assert rows[-1]["eval_kd"] > 0


def test_cached_teacher_trains_through_the_cli(workdir, tiny_llama_dir, tiny_teacher_dir):
    cache = cache_of(workdir, tiny_teacher_dir)
    rows = distill(workdir, "cached", {"kind": "cached", "path": str(cache)}, tiny_llama_dir)
    assert all(r["kd"] > 0 for r in rows)


def test_records_and_cached_holding_the_same_topk_give_identical_losses(
    workdir, tiny_llama_dir, tiny_teacher_dir
):
    # With the tail renormalised away, the two kinds see exactly the same numbers.
    cache = cache_of(workdir, tiny_teacher_dir)
    records_from_cache(workdir, cache)
    loss = {"weights": {"kd": 1.0}, "tail": "renormalize"}
    cached = distill(
        workdir, "c", {"kind": "cached", "path": str(cache)}, tiny_llama_dir, loss=loss
    )
    records = distill(
        workdir,
        "r",
        {"kind": "records"},
        tiny_llama_dir,
        loss=loss,
        data={"train": "records.jsonl"},
    )
    assert [r["kd"] for r in records] == [c["kd"] for c in cached]
    assert records[-1]["eval_kd"] == cached[-1]["eval_kd"]


def test_records_with_the_bucketed_tail_stay_within_the_fp16_tail_of_the_cache(
    workdir, tiny_llama_dir, tiny_teacher_dir
):
    # The cache stores the exact tail; records derive it from their fp16 top-k.
    cache = cache_of(workdir, tiny_teacher_dir)
    records_from_cache(workdir, cache)
    cached = distill(workdir, "c", {"kind": "cached", "path": str(cache)}, tiny_llama_dir)
    records = distill(
        workdir, "r", {"kind": "records"}, tiny_llama_dir, data={"train": "records.jsonl"}
    )
    for c, r in zip(cached, records, strict=True):
        assert r["kd"] == pytest.approx(c["kd"], rel=2e-3)


def test_records_without_topk_are_refused_before_step_0(workdir, tiny_llama_dir, capsys):
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "records"},
        "data": {"train": "train.jsonl", "max_length": MAX_LENGTH},
        "train": {"max_steps": 1, "batch_size": 4},
        "output_dir": "run",
    }
    path = workdir / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "teacher.kind 'records'" in err
    assert "have no teacher_topk" in err
    assert not (workdir / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("scoring", ["echo", "prompt_logprobs"])
def test_http_teacher_matches_the_hf_teacher_within_topk_tolerance(
    workdir, tiny_llama_dir, tiny_teacher_dir, scoring
):
    hf = distill(
        workdir, "hf", {"kind": "hf", "path": str(tiny_teacher_dir), "topk": K}, tiny_llama_dir
    )
    with LoopbackTeacherServer(tiny_teacher_dir) as server:
        http = distill(workdir, "http", http_teacher(server, scoring=scoring), tiny_llama_dir)
    assert (workdir / "http" / "kd-store.sqlite").exists()  # the response cache and ledger
    for a, b in zip(hf, http, strict=True):
        # same top-k; the hf teacher's tail is exact, the endpoint's is derived from it
        assert b["kd"] == pytest.approx(a["kd"], rel=1e-3)
    assert http[-1]["eval_kd"] == pytest.approx(hf[-1]["eval_kd"], rel=1e-3)


def test_a_second_http_run_is_served_from_the_response_cache(
    workdir, tiny_llama_dir, tiny_teacher_dir
):
    store = f"sqlite:///{workdir / 'shared.sqlite'}"
    with LoopbackTeacherServer(tiny_teacher_dir) as server:
        teacher = http_teacher(server, store=store)
        first = distill(workdir, "a", teacher, tiny_llama_dir)
        answered = len(server.answered)
        second = distill(workdir, "b", teacher, tiny_llama_dir)
        assert answered > 0
        assert len(server.answered) == answered  # every batch came from the cache
    assert [r["kd"] for r in first] == [r["kd"] for r in second]


def test_hidden_state_matching_with_a_cached_teacher_is_refused_at_config_time(
    workdir, tiny_llama_dir, capsys
):
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "cached", "path": str(workdir)},
        "data": {"train": "train.jsonl"},
        "loss": {"weights": {"kd": 1.0, "hidden": 0.1}, "hidden": {"layer_map": [[1, 2]]}},
        "train": {"max_steps": 1},
        "output_dir": "run",
    }
    path = workdir / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hidden-state matching needs the teacher's per-layer hidden states" in err
    assert "Use teacher.kind 'hf'" in err


def test_loaded_student_tensors_are_untouched_by_lr_zero(workdir, tiny_llama_dir, tiny_teacher_dir):
    # Guards the comparisons above: with lr 0 the student is its init in every run.
    distill(workdir, "hf", {"kind": "hf", "path": str(tiny_teacher_dir)}, tiny_llama_dir)
    from safetensors.torch import load_file

    before = load_file(str(tiny_llama_dir / "model.safetensors"))
    after = load_file(str(workdir / "hf" / "student" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hidden_state_matching_trains_through_the_cli(workdir, tiny_llama_dir, tiny_teacher_dir):
    loss = {"weights": {"kd": 1.0, "hidden": 0.5}, "hidden": {"layer_map": [[2, 3]]}}
    rows = distill(
        workdir,
        "hidden",
        {"kind": "hf", "path": str(tiny_teacher_dir)},
        tiny_llama_dir,
        loss=loss,
        optim={"lr": 1e-2},
    )
    assert all(r["hidden"] > 0 for r in rows)
    assert rows[-1]["eval_hidden"] > 0


def test_an_http_teacher_scores_the_students_own_samples_like_the_hf_teacher(
    workdir, tiny_llama_dir, tiny_teacher_dir
):
    sampled = {"eval_every": 0, "on_policy": {"lmbda": 1.0, "max_new_tokens": 6}}
    teacher = {"kind": "hf", "path": str(tiny_teacher_dir), "topk": K}
    hf = distill(workdir, "hf-sampled", teacher, tiny_llama_dir, train=sampled)
    with LoopbackTeacherServer(tiny_teacher_dir) as server:
        http = distill(workdir, "http-sampled", http_teacher(server), tiny_llama_dir, train=sampled)
        # the first two answers are the endpoint's probe (kd_train.teachers.http.scoring)
        scored_tokens = sum(usage["prompt_tokens"] for usage in server.answered[2:])
    # Same sampler seed and a student that does not move (lr 0): the same samples.
    hf_samples = (workdir / "hf-sampled" / "samples.jsonl").read_text()
    assert (workdir / "http-sampled" / "samples.jsonl").read_text() == hf_samples
    assert {r["source"] for r in http} == {"student"}
    # The endpoint scored exactly the sampled sequences (prompt + sampled tokens per row).
    assert scored_tokens == sum(r["tokens"] for r in http)
    for a, b in zip(hf, http, strict=True):
        assert b["kd"] == pytest.approx(a["kd"], rel=1e-3)
