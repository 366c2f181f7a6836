"""LoRA students: peft adapters train, the checkpoint keeps them, the saved student is merged."""

from __future__ import annotations

import copy
import json
import shutil
import sys

import pytest
import torch
from kd_train.trainer.checkpoint import ResumeDriftError
from kd_train.trainer.config import RunConfigError, parse_config
from kd_train.trainer.loop import train
from kd_train.trainer.lora import (
    LoraUnavailableError,
    add_adapters,
    base_fingerprint,
    has_adapters,
    merge_adapters,
)
from kd_train.trainer.train_config import LoraConfig
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

pytest.importorskip("peft", reason="LoRA students need the lora extra (peft)")

LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}


def losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows]


@pytest.fixture
def student(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir)


def test_only_the_adapters_train_and_the_student_starts_unchanged(student, tiny_llama_dir):
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        before = student(ids).logits
    model = add_adapters(student, LoraConfig(**LORA))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # B starts at 0


def test_merging_matches_peft_merge_and_unload(student, tiny_llama_dir):
    peft = pytest.importorskip("peft")
    settings = peft.LoraConfig(r=4, lora_alpha=8.0, target_modules=["q_proj", "v_proj"])
    wrapped = peft.get_peft_model(student, settings)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if ".lora_B." in name:
                param.normal_(0, 0.5)
    ours = merge_adapters(copy.deepcopy(wrapped).get_base_model())
    expected = wrapped.merge_and_unload().state_dict()
    assert not has_adapters(ours)
    assert set(ours.state_dict()) == set(expected)
    assert all(torch.equal(ours.state_dict()[k], expected[k]) for k in expected)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(ours.state_dict()[q], base[q])


def test_a_lora_run_saves_a_merged_student_and_keeps_adapters_and_their_optimiser_state(
    make_config, tiny_llama_dir
):
    result = train(parse_config(make_config(student={"lora": LORA})), progress=False)
    saved = load_file(str(result.student_dir / "model.safetensors"))
    base = load_file(str(tiny_llama_dir / "model.safetensors"))
    assert set(saved) == set(base)  # merged: the plain transformers names
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(saved[q], base[q])  # the adapter is folded in
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(saved[k], base[k])  # no adapter, no change
    checkpoint = result.run_dir / "checkpoints" / "step-00000006"
    weights = load_file(str(checkpoint / "model.safetensors"))
    assert sum(".lora_A." in n or ".lora_B." in n for n in weights) == 8
    with safe_open(str(checkpoint / "optimizer.safetensors"), framework="pt") as handle:
        slots = sorted(handle.keys())
    assert len(slots) == 8 * 3  # exp_avg, exp_avg_sq and step of each adapter matrix only
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["fingerprints"]["student"].startswith("sha256:")


def test_a_lora_run_resumes_exactly(make_config):
    cfg = parse_config(
        make_config(student={"lora": LORA}, train={"checkpoint_every": 3, "keep_checkpoints": 3})
    )
    full = train(cfg, progress=False)
    reference = losses(full.run_dir)
    final = load_file(str(full.student_dir / "model.safetensors"))
    shutil.rmtree(full.run_dir / "checkpoints" / "step-00000006")
    shutil.rmtree(full.student_dir)
    resumed = train(cfg, resume=True, progress=False)
    assert losses(resumed.run_dir) == reference
    again = load_file(str(resumed.student_dir / "model.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_resuming_a_lora_run_on_another_base_is_refused(make_config, tiny_llama_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_llama_dir, base)
    cfg = parse_config(make_config(student={"path": str(base), "lora": LORA}))
    train(cfg, progress=False)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    model.save_pretrained(base)
    with pytest.raises(ResumeDriftError, match=r"fingerprint\.student: sha256:"):
        train(cfg, resume=True, progress=False)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"student": {"lora": {"rank": 0}}}, "student.lora.rank: must be >= 1"),
        ({"student": {"lora": {"dropout": 1.0}}}, "student.lora.dropout: must be < 1"),
        ({"student": {"lora": {"target_modules": []}}}, "student.lora.target_modules"),
        (
            {"student": {"lora": {}}, "qat": {"scheme": "int8"}},
            "qat: not supported with student.lora",
        ),
    ],
)
def test_bad_lora_config_is_refused_naming_the_key(make_config, sections, message):
    cfg = make_config()
    cfg["student"] = {**cfg["student"], **sections["student"]}
    if "qat" in sections:
        cfg["qat"] = sections["qat"]
    with pytest.raises(RunConfigError, match=message):
        parse_config(cfg)


def test_a_target_module_the_student_lacks_is_refused_naming_it(student):
    with pytest.raises(ValueError, match=r"student\.lora\.target_modules: \['qkv'\] name no"):
        add_adapters(student, LoraConfig(target_modules=("q_proj", "qkv")))


def test_without_peft_the_error_names_the_extra(student, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import now fails
    with pytest.raises(LoraUnavailableError, match=r"pip install kd-train\[lora\]"):
        add_adapters(student, LoraConfig())


def test_merging_a_student_without_adapters_returns_it_unchanged(student):
    assert merge_adapters(student) is student


def test_a_student_built_from_a_config_has_no_base_fingerprint(make_config):
    cfg = parse_config(
        make_config(student={"path": None, "config": {"model_type": "llama"}, "tokenizer": "t"})
    )
    assert base_fingerprint(cfg.student) is None
    with_lora = cfg.student.model_copy(update={"lora": LoraConfig()})
    assert base_fingerprint(with_lora) is None
