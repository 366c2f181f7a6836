"""Hidden-state matching from the run config: trained, checkpointed, resumed, not exported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from kd_train.errors import KDTrainError
from kd_train.trainer import RunConfigError, parse_config, train
from safetensors.torch import load_file

HIDDEN = {"weights": {"kd": 1.0, "hidden": 0.5}, "hidden": {"layer_map": [[1, 2], [2, 3]]}}


TIMING = ("tokens_per_s", "elapsed_s", "peak_memory_mb")


def losses(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def test_hidden_term_is_trained_and_its_projections_learn(make_config):
    cfg = parse_config(make_config(loss=HIDDEN, train={"max_steps": 6, "checkpoint_every": 3}))
    result = train(cfg, progress=False)
    rows = losses(result.run_dir)
    assert all(r["hidden"] > 0 for r in rows)
    assert rows[-1]["hidden"] < rows[0]["hidden"]
    first = load_file(str(result.run_dir / "checkpoints" / "step-00000003" / "model.safetensors"))
    last = load_file(str(result.run_dir / "checkpoints" / "step-00000006" / "model.safetensors"))
    projections = [k for k in last if k.startswith("loss.hidden.projections.")]
    assert projections == ["loss.hidden.projections.0.weight", "loss.hidden.projections.1.weight"]
    assert last[projections[0]].shape == (64, 32)  # student hidden 32 -> teacher hidden 64
    assert not torch.equal(first[projections[0]], last[projections[0]])


def test_the_exported_student_leaves_the_projections_out(make_config, tiny_llama_dir):
    result = train(parse_config(make_config(loss=HIDDEN)), progress=False)
    saved = load_file(str(result.student_dir / "model.safetensors"))
    init = load_file(str(tiny_llama_dir / "model.safetensors"))
    assert sorted(saved) == sorted(init)


def test_resume_restores_the_projections_and_reproduces_the_run(make_config):
    cfg = parse_config(make_config(loss=HIDDEN, train={"max_steps": 6, "checkpoint_every": 3}))
    full = train(cfg, progress=False)
    reference = losses(full.run_dir)
    shutil.rmtree(full.run_dir / "checkpoints" / "step-00000006")
    shutil.rmtree(full.student_dir)
    resumed = train(cfg, resume=True, progress=False)
    assert losses(resumed.run_dir) == reference


def test_a_checkpoint_without_the_projections_is_refused(make_config):
    plain = parse_config(make_config(train={"max_steps": 3, "checkpoint_every": 3}))
    train(plain, progress=False)
    with_hidden = parse_config(
        make_config(loss=HIDDEN, train={"max_steps": 6, "checkpoint_every": 3})
    )
    # The config changes are accepted by name, so that the weights' check is what refuses.
    allowed = ("loss", "train.max_steps")
    with pytest.raises(KDTrainError, match=r"loss\.hidden\.projections"):
        train(with_hidden, resume=True, progress=False, allow_change=allowed)


@pytest.mark.parametrize("kind", ["cached", "records", "none"])
def test_hidden_with_a_teacher_without_layers_is_refused_at_config_time(make_config, kind):
    cfg = make_config(loss={**HIDDEN, "weights": {"ce": 1.0, "hidden": 0.5}})
    cfg["teacher"] = {"kind": kind, "path": "somewhere"} if kind == "cached" else {"kind": kind}
    with pytest.raises(RunConfigError, match="only a local model computes"):
        parse_config(cfg)


def test_hidden_with_fsdp_is_refused_at_config_time(make_config):
    with pytest.raises(RunConfigError, match="not sharded"):
        parse_config(make_config(loss=HIDDEN, distributed={"strategy": "fsdp"}))
