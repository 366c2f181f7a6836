"""``kd-train distill`` under ``torchrun --nproc_per_node 2`` with FSDP2 (gloo on CPU).

One single-process run and one two-process FSDP run with the same global batch (1 x 8
against 2 x 4 examples per micro-batch, 2 micro-batches per step) are made once; each test
checks one property of them. The student ties its input and output
embeddings, the case where a gathered state has to be written like ``save_model`` does.
"""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from filelock import FileLock
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer.checkpoint import latest_checkpoint, load_checkpoint, verify_checkpoint
from kd_train.trainer.distributed import DistContext, replica_digests
from kd_train.trainer.metrics import read_metrics
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.integration  # ~35 s on 2 shared cores: runs in CI, like the DDP test

#: Same global batch, different process count: float32 sums in another order, nothing more
#: (the tolerances of test_trainer_ddp.py).
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4
#: Below most steps' gradient norm (0.012-0.022 here), so clipping changes the updates.
CLIP_NORM = 0.015
MAX_STEPS = 8
TIMING = ("tokens_per_s", "elapsed_s", "peak_memory_mb")


def student_config(tokenizer_dir):
    return {
        "config": {
            "model_type": "llama",
            "vocab_size": 320,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "tie_word_embeddings": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 3,
        },
        "tokenizer": str(tokenizer_dir),
    }


def write_config(root, name, student, teacher, data, batch_size, strategy):
    cfg = {
        "student": student,
        "teacher": {"kind": "hf", "path": str(teacher)},
        "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 48},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {
            "max_steps": MAX_STEPS,
            "batch_size": batch_size,
            "grad_accum": 2,
            "clip_norm": CLIP_NORM,
            "threads": 1,
            "eval_every": 4,
            "checkpoint_every": 4,
            "keep_checkpoints": 3,
        },
        "distributed": {"strategy": strategy},
        "output_dir": str(root / name),
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def torchrun(*args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run([*cmd, "-m", "kd_train.cli", *args, "--no-progress"], check=True, timeout=300)


def kd_train(*args):
    subprocess.run([shutil.which("kd-train"), *args, "--no-progress"], check=True, timeout=300)


def roll_back(run_dir, to_dir, **train):
    """Copy ``run_dir`` to ``to_dir`` as if killed after its step-4 checkpoint."""
    shutil.copytree(run_dir, to_dir)
    shutil.rmtree(to_dir / "checkpoints" / f"step-{MAX_STEPS:08d}")
    shutil.rmtree(to_dir / "student")
    (to_dir / "run_manifest.json").unlink()
    config = json.loads((to_dir / "config.json").read_text())
    config["output_dir"] = str(to_dir)  # resume trains in the config's output_dir
    config["train"].update(train)
    (to_dir / "config.json").write_text(json.dumps(config))
    return to_dir


def rows(run_dir):
    return [
        {k: v for k, v in row.items() if k not in TIMING}
        for row in read_metrics(run_dir / "metrics.jsonl")
    ]


def weights(run_dir):
    return load_file(str(run_dir / "student" / "model.safetensors"))


@pytest.fixture(scope="session")
def runs(tmp_path_factory, worker_id, tiny_llama_dir, tiny_teacher_dir):
    """The two runs, made once per test session and shared by the pytest-xdist workers.

    Tests of this module may land on several workers (``xdist_group`` does not keep them on
    one with pytest 9 / xdist 3.8 here), so the first worker to take the lock makes the runs
    in the session's common temp dir and the others wait for it.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "fsdp-runs"
    with FileLock(f"{root}.lock"):
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            data = write_jsonl(root / "train.jsonl", tool_call_records(40, seed=4))
            student = student_config(tiny_llama_dir)
            single = write_config(root, "single", student, tiny_teacher_dir, data, 8, "ddp")
            fsdp = write_config(root, "fsdp", student, tiny_teacher_dir, data, 4, "fsdp")
            kd_train("distill", "--config", str(single))
            torchrun("distill", "--config", str(fsdp))
            (root / "done").touch()
    return root


def test_fsdp_losses_and_gradient_norms_match_one_process_with_the_same_global_batch(runs):
    one, two = rows(runs / "single"), rows(runs / "fsdp")
    assert [r["step"] for r in two] == list(range(1, MAX_STEPS + 1))
    assert any(r["grad_norm"] > CLIP_NORM for r in one)  # clipping acted on some steps
    assert sum("eval_loss" in r for r in two) == 2
    for a, b in zip(one, two, strict=True):
        assert a["tokens"] == b["tokens"]
        for key in ("loss", "kd", "grad_norm", "eval_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL)


def test_fsdp_final_student_is_whole_and_matches_one_process(runs):
    one, two = weights(runs / "single"), weights(runs / "fsdp")
    assert one.keys() == two.keys()
    for key in one:
        assert two[key].shape == one[key].shape
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=WEIGHT_ATOL)
    model = AutoModelForCausalLM.from_pretrained(runs / "fsdp" / "student")
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert model.config.architectures == ["LlamaForCausalLM"]


def test_every_rank_held_the_weights_the_saved_student_holds(runs):
    digests = json.loads((runs / "fsdp" / "run_manifest.json").read_text())["replica_sha256"]
    model = AutoModelForCausalLM.from_pretrained(runs / "fsdp" / "student")
    assert digests == replica_digests(model, DistContext()) * 2


def test_fsdp_checkpoint_has_the_format_of_a_single_process_one(runs):
    ckpt = latest_checkpoint(runs / "fsdp")
    reference = latest_checkpoint(runs / "single")
    assert ckpt.name == reference.name == f"step-{MAX_STEPS:08d}"
    manifest = verify_checkpoint(ckpt)
    assert manifest["files"].keys() == verify_checkpoint(reference)["files"].keys()
    for name in ("model.safetensors", "optimizer.safetensors"):
        with safe_open(str(ckpt / name), "pt") as a, safe_open(str(reference / name), "pt") as b:
            assert a.metadata() == b.metadata()
            names = sorted(a.keys())
            assert names == sorted(b.keys())
            for key in names:
                assert a.get_slice(key).get_shape() == b.get_slice(key).get_shape()
    saved = json.loads((ckpt / "trainer_state.json").read_text())["param_groups"]
    expected = json.loads((reference / "trainer_state.json").read_text())["param_groups"]
    assert saved == expected


def test_fsdp_checkpoint_loads_into_a_single_process_student(runs, tiny_llama_dir):
    from transformers import AutoConfig

    options = dict(student_config(tiny_llama_dir)["config"])
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    loaded = {}
    for name in ("single", "fsdp"):
        model = AutoModelForCausalLM.from_config(config)
        optimizer = torch.optim.AdamW(model.parameters())
        load_checkpoint(runs / name / "checkpoints" / "step-00000004", model, optimizer)
        loaded[name] = (model.state_dict(), optimizer.state_dict())
    (w1, o1), (w2, o2) = loaded["single"], loaded["fsdp"]
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=WEIGHT_ATOL)
    assert o1["param_groups"] == o2["param_groups"]
    for index, slots in o1["state"].items():
        assert torch.equal(o2["state"][index]["step"], slots["step"])
        torch.testing.assert_close(o2["state"][index]["exp_avg"], slots["exp_avg"])


def test_one_process_resumes_an_fsdp_checkpoint_with_the_same_global_batch(runs):
    # strategy stays 'fsdp' in the config: a single process ignores it
    handover = roll_back(runs / "fsdp", runs / "handover", batch_size=8)
    kd_train("resume", str(handover), "--allow-change", "train.batch_size")  # same global batch
    one, resumed = rows(runs / "single"), rows(handover)
    assert [r["step"] for r in resumed] == list(range(1, MAX_STEPS + 1))
    for a, b in zip(one, resumed, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
    expected, got = weights(runs / "single"), weights(handover)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=WEIGHT_ATOL)


def test_fsdp_resume_reproduces_the_uninterrupted_fsdp_run(runs):
    resumed = roll_back(runs / "fsdp", runs / "resumed")
    torchrun("resume", str(resumed))
    assert rows(resumed) == rows(runs / "fsdp")
    expected, got = weights(runs / "fsdp"), weights(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
