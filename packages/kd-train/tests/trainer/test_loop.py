import json
import shutil
from pathlib import Path

import pytest
import torch
from kd_train.errors import KDTrainError
from kd_train.trainer import parse_config, train
from kd_train.trainer.checkpoint import TrainState, latest_checkpoint
from kd_train.trainer.loop import update_early_stopping
from kd_train.trainer.metrics import read_metrics
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

LOSS_KEYS = ("ce", "kd", "loss")


def losses(run_dir):
    return [tuple(row[k] for k in LOSS_KEYS) for row in read_metrics(run_dir / "metrics.jsonl")]


def test_distillation_lowers_the_kd_loss(make_config):
    cfg = make_config(train={"max_steps": 12}, loss={"weights": {"kd": 1.0}})
    result = train(parse_config(cfg), progress=False)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert rows[-1]["kd"] < 0.7 * rows[0]["kd"]


def test_metrics_have_one_row_per_step_with_every_field(make_config):
    result = train(parse_config(make_config(train={"eval_every": 2})), progress=False)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    expected = {"epoch", "lr", "grad_norm", "tokens", "tokens_per_s", "peak_memory_mb", "elapsed_s"}
    assert expected | set(LOSS_KEYS) <= set(rows[0])
    assert "eval_kd" in rows[1]
    assert "eval_kd" not in rows[0]


def test_resume_reproduces_the_uninterrupted_run(make_config):
    cfg = parse_config(make_config(train={"checkpoint_every": 3, "keep_checkpoints": 3}))
    full = train(cfg, progress=False)
    reference = losses(full.run_dir)
    final = load_file(str(full.student_dir / "model.safetensors"))
    # Roll the run back to its step-3 checkpoint, as if it had been killed at step 5.
    shutil.rmtree(full.run_dir / "checkpoints" / "step-00000006")
    shutil.rmtree(full.student_dir)
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.state.step == 6
    assert losses(resumed.run_dir) == reference
    again = load_file(str(resumed.student_dir / "model.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_gradient_accumulation_matches_one_large_batch(make_config, tmp_path):
    big = train(parse_config(make_config(train={"batch_size": 8})), progress=False)
    acc = train(
        parse_config(
            make_config(train={"batch_size": 4, "grad_accum": 2}, output_dir=str(tmp_path / "acc"))
        ),
        progress=False,
    )
    for a, b in zip(losses(big.run_dir), losses(acc.run_dir), strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_a_run_dir_with_checkpoints_is_not_overwritten(make_config):
    cfg = parse_config(make_config(train={"max_steps": 1}))
    train(cfg, progress=False)
    with pytest.raises(KDTrainError, match="already holds checkpoints; continue it with"):
        train(cfg, progress=False)


def test_resume_without_a_checkpoint_is_an_error(make_config):
    with pytest.raises(KDTrainError, match="nothing to resume"):
        train(parse_config(make_config()), resume=True, progress=False)


def test_early_stopping_ends_the_run_when_eval_stops_improving(make_config):
    cfg = make_config(
        optim={"lr": 0.0, "warmup_steps": 0},
        train={"max_steps": 10, "eval_every": 1, "early_stopping_patience": 2},
    )
    result = train(parse_config(cfg), progress=False)
    assert result.state.stopped_early
    assert result.state.step == 3
    assert latest_checkpoint(result.run_dir).name == "step-00000003"


def test_early_stopping_counter_resets_on_improvement():
    state = TrainState()
    for loss in (3.0, 3.5, 2.0, 2.5):
        update_early_stopping(state, loss, patience=2)
    assert (state.best_eval_loss, state.evals_without_improvement, state.stopped_early) == (
        2.0,
        1,
        False,
    )


def test_ce_only_run_without_teacher_trains_on_labels(make_config):
    cfg = make_config(loss={"weights": {"ce": 1.0}})
    cfg["teacher"] = {"kind": "none"}
    result = train(parse_config(cfg), progress=False)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert rows[0]["loss"] == rows[0]["ce"]
    assert rows[-1]["ce"] < rows[0]["ce"]


def test_topk_teacher_and_bf16_autocast_train(make_config):
    cfg = make_config(teacher={"topk": 8}, train={"precision": "bf16", "max_steps": 3})
    rows = read_metrics(train(parse_config(cfg), progress=False).run_dir / "metrics.jsonl")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


def test_student_built_from_a_gqa_config(make_config, tiny_llama_dir):
    student = {
        "path": None,
        "config": {
            "model_type": "llama",
            "vocab_size": 320,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
        },
        "tokenizer": str(tiny_llama_dir),
    }
    result = train(
        parse_config(make_config(student=student, train={"max_steps": 2})), progress=False
    )
    model = AutoModelForCausalLM.from_pretrained(result.student_dir)
    assert model.config.num_key_value_heads == 1


def test_final_student_and_run_manifest_are_written(make_config):
    result = train(parse_config(make_config(train={"max_steps": 2})), progress=False)
    model = AutoModelForCausalLM.from_pretrained(result.student_dir)
    assert model.config.vocab_size == 320
    assert (result.student_dir / "tokenizer.json").exists()
    manifest = json.loads((result.run_dir / "run_manifest.json").read_text())
    assert len(manifest["datasets"]["train"]["sha256"]) == 64
    assert len(manifest["tokenizer_sha256"]) == 64
    assert "kd-train" in manifest["packages"]
    assert manifest["config"]["train"]["max_steps"] == 2
    assert manifest["state"]["step"] == 2


def test_cached_teacher_trains_from_a_cache_logits_directory(make_config, tmp_path):
    from kd_train.cli import main

    cfg = make_config(train={"max_steps": 12}, loss={"weights": {"kd": 1.0}})
    cache = tmp_path / "cache"
    argv = ["cache-logits", "--teacher", cfg["teacher"]["path"], "--data", cfg["data"]["train"]]
    assert main([*argv, "--out", str(cache), "--k", "8", "--max-length", "48"]) == 0
    cfg["teacher"] = {"kind": "cached", "path": str(cache)}
    rows = read_metrics(train(parse_config(cfg), progress=False).run_dir / "metrics.jsonl")
    assert rows[-1]["kd"] < 0.7 * rows[0]["kd"]


def test_cached_teacher_evaluates_a_separate_eval_file_from_its_own_cache(make_config, tmp_path):
    from kd_train.cli import main
    from kd_train.pipelines.toydata import tool_call_records, write_jsonl

    eval_file = write_jsonl(tmp_path / "eval.jsonl", tool_call_records(8, seed=9))
    cfg = make_config(
        data={"eval": str(eval_file)},
        train={"max_steps": 4, "eval_every": 2},
        loss={"weights": {"kd": 1.0}},
    )
    teacher = cfg["teacher"]["path"]
    for data, out in ((cfg["data"]["train"], "cache"), (str(eval_file), "eval-cache")):
        argv = ["cache-logits", "--teacher", teacher, "--data", data, "--out", str(tmp_path / out)]
        assert main([*argv, "--k", "8", "--max-length", "48"]) == 0
    cfg["teacher"] = {"kind": "cached", "path": str(tmp_path / "cache")}
    with pytest.raises(KDTrainError, match=r"teacher\.eval_path"):
        parse_config(cfg)
    cfg["teacher"]["eval_path"] = str(tmp_path / "eval-cache")
    rows = read_metrics(train(parse_config(cfg), progress=False).run_dir / "metrics.jsonl")
    assert [("eval_kd" in r) for r in rows] == [False, True, False, True]
    assert all(r["eval_kd"] > 0 for r in rows if "eval_kd" in r)


def test_bad_loss_table_is_rejected_before_anything_runs(make_config):
    allowed = r"loss\.divergence: 'kl' is not allowed \(allowed: forward_kl, reverse_kl,"
    with pytest.raises(KDTrainError, match=allowed):
        parse_config(make_config(loss={"divergence": "kl"}))


@pytest.mark.parametrize("term", ["span_integration", "code_pref"])
def test_a_span_weight_on_data_without_that_span_kind_is_refused_before_step_0(
    make_config, tmp_path, term
):
    from kd_train.data.schema import KDRecord
    from kd_train.pipelines.toydata import write_jsonl

    plain = [KDRecord(f"r{i}", "Q:", f" answer {i}") for i in range(12)]
    cfg = make_config(loss={"weights": {"kd": 1.0, term: 0.5}})
    cfg["data"]["train"] = str(write_jsonl(tmp_path / "plain.jsonl", plain))
    with pytest.raises(KDTrainError, match=rf"loss\.weights\.{term} is set but no train record"):
        train(parse_config(cfg), progress=False)
    assert not (Path(cfg["output_dir"]) / "metrics.jsonl").exists()


def test_the_learning_rate_warms_up_linearly_then_decays_on_a_cosine_to_its_floor():
    import math

    from kd_train.trainer.config import OptimConfig
    from kd_train.trainer.loop import lr_at

    opt = OptimConfig(lr=2.0, warmup_steps=4, min_lr_ratio=0.1)
    warmup = [lr_at(s, opt, 14) for s in range(4)]
    assert warmup == [0.5, 1.0, 1.5, 2.0]
    floor = 0.2
    for step in range(4, 14):
        progress = (step - 4) / 10
        expected = floor + (2.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        assert lr_at(step, opt, 14) == pytest.approx(expected)
    assert lr_at(14, opt, 14) == pytest.approx(floor)
    assert lr_at(99, opt, 14) == pytest.approx(floor)  # past the end: the floor, not a rebound
    none = OptimConfig(lr=2.0, warmup_steps=0, min_lr_ratio=0.0)
    assert lr_at(0, none, 10) == 2.0
