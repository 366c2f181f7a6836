import dataclasses
import hashlib
import json
import random

import numpy as np
import pytest
import torch
from kd_train.trainer.checkpoint import (
    CheckpointError,
    TrainState,
    gather_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from safetensors import safe_open
from safetensors.torch import save_model
from transformers import AutoConfig, AutoModelForCausalLM


def fresh(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    return model, torch.optim.AdamW(model.parameters(), lr=5.0)


def test_round_trip_restores_weights_optimizer_rng_and_cursor(tmp_path, trained, tiny_llama_dir):
    model, optimizer = trained
    state = TrainState(step=7, epoch=1, index=3, best_eval_loss=0.5)
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    ckpt = save_checkpoint(tmp_path, state, model, optimizer, {"k": 1})
    expected_draws = (torch.rand(3), random.random(), np.random.rand())

    other, other_opt = fresh(tiny_llama_dir)
    assert load_checkpoint(ckpt, other, other_opt) == state
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved, loaded = optimizer.state_dict(), other_opt.state_dict()
    assert loaded["param_groups"][0]["lr"] == 1e-2
    for i, slots in saved["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, loaded["state"][i][name])
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert (random.random(), np.random.rand()) == expected_draws[1:]


def test_manifest_holds_hash_of_every_state_file_and_the_config(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {"lr": 3})
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["config"] == {"lr": 3}
    assert sorted(manifest["files"]) == sorted(
        p.name for p in ckpt.iterdir() if p.name != "manifest.json"
    )
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())


def test_manifest_records_the_sha256_and_size_of_each_file(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    files = json.loads((ckpt / "manifest.json").read_text())["files"]
    for name, entry in files.items():
        data = (ckpt / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_corrupted_file_is_named_in_the_error(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupted: SHA-256"):
        verify_checkpoint(ckpt)


def test_truncated_file_is_named_in_the_error(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    opt_file = ckpt / "optimizer.safetensors"
    opt_file.write_bytes(opt_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors is truncated"):
        load_checkpoint(ckpt, model, optimizer)


def test_missing_file_and_missing_manifest_are_reported(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    (ckpt / "rng.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"rng\.safetensors is missing"):
        verify_checkpoint(ckpt)
    (ckpt / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no manifest.json"):
        verify_checkpoint(ckpt)


def test_garbled_manifest_is_reported(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    (ckpt / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"manifest .*manifest\.json is corrupted"):
        verify_checkpoint(ckpt)


def test_a_save_killed_halfway_leaves_the_previous_checkpoint_latest(tmp_path, trained):
    model, optimizer = trained
    good = save_checkpoint(tmp_path, TrainState(step=5), model, optimizer, {})
    half = tmp_path / "checkpoints" / ".tmp-step-00000010-999"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == good
    verify_checkpoint(good)


def test_only_the_newest_checkpoints_are_kept_and_stale_temporaries_removed(tmp_path, trained):
    model, optimizer = trained
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step-00000001-1").mkdir()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, TrainState(step=step), model, optimizer, {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003"]


def test_no_checkpoint_means_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None


def test_an_empty_checkpoints_dir_means_none(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    assert latest_checkpoint(tmp_path) is None


def test_latest_is_the_highest_step_not_the_newest_write(tmp_path, trained):
    model, optimizer = trained
    for step in (20, 3):
        save_checkpoint(tmp_path, TrainState(step=step), model, optimizer, {}, keep=5)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000020"


def test_saving_creates_a_run_dir_that_does_not_exist_yet(tmp_path, trained):
    model, optimizer = trained
    run_dir = tmp_path / "runs" / "new-run"
    ckpt = save_checkpoint(run_dir, TrainState(step=1), model, optimizer, {})
    assert ckpt == run_dir / "checkpoints" / "step-00000001"
    assert verify_checkpoint(ckpt)["step"] == 1


def test_a_fresh_state_starts_at_zero_with_no_best_eval_loss():
    state = TrainState()
    assert state.best_eval_loss is None
    assert (state.step, state.epoch, state.index, state.tokens_seen) == (0, 0, 0, 0)
    assert (state.evals_without_improvement, state.stopped_early) == (0, False)


def test_weights_of_another_architecture_are_refused(tmp_path, trained, tiny_teacher_dir):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher_dir)
    with pytest.raises(CheckpointError, match=r"does not fit the student"):
        load_checkpoint(ckpt, teacher)


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    assert {p.suffix for p in ckpt.iterdir()} == {".safetensors", ".json"}


@pytest.fixture
def tied(tiny_llama_dir):
    """A student whose output layer shares the input embedding, after one AdamW step."""
    config = AutoConfig.from_pretrained(tiny_llama_dir, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[1, 5, 9, 2]])).logits.sum().backward()
    optimizer.step()
    return model, optimizer


def test_tied_weights_are_stored_once_as_safetensors_save_model_does(tmp_path, tied):
    model, optimizer = tied
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    save_model(model, str(tmp_path / "reference.safetensors"))
    with (
        safe_open(str(ckpt / "model.safetensors"), "pt") as ours,
        safe_open(str(tmp_path / "reference.safetensors"), "pt") as reference,
    ):
        assert ours.metadata() == reference.metadata()
        assert ours.metadata() == {"model.embed_tokens.weight": "lm_head.weight"}
        assert sorted(ours.keys()) == sorted(reference.keys())


def test_tied_weights_load_back_tied(tmp_path, tied, tiny_llama_dir):
    model, optimizer = tied
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    config = AutoConfig.from_pretrained(tiny_llama_dir, tie_word_embeddings=True)
    other = AutoModelForCausalLM.from_config(config)
    load_checkpoint(ckpt, other, torch.optim.AdamW(other.parameters()))
    assert other.lm_head.weight is other.model.embed_tokens.weight
    assert torch.equal(other.lm_head.weight, model.lm_head.weight)


def test_a_checkpoint_of_another_shape_names_the_tensor(tmp_path, trained, tiny_llama_dir):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    wider = AutoConfig.from_pretrained(tiny_llama_dir, intermediate_size=80)
    with pytest.raises(
        CheckpointError, match=r"other shapes \[.*mlp.* \(64, 32\) != \(80, 32\)"
    ) as e:
        load_checkpoint(ckpt, AutoModelForCausalLM.from_config(wider))
    # 2 layers x 3 MLP projections differ; the message names the first three, sorted.
    assert str(e.value).count(" != ") == 3
    assert "model.layers.0.mlp.down_proj.weight (32, 64) != (32, 80)" in str(e.value)


def test_a_file_grown_past_its_manifest_size_is_reported_as_resized(tmp_path, trained):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    with open(ckpt / "model.safetensors", "ab") as handle:
        handle.write(b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated or resized"):
        verify_checkpoint(ckpt)


def test_gathering_without_an_optimizer_gives_the_weights_only(trained):
    model, _ = trained
    full = gather_state(model)
    assert (full.optimizer, full.param_groups) == ({}, [])
    assert all(torch.equal(full.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_gathered_state_cannot_be_changed_afterwards(trained):
    full = gather_state(*trained)
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.weights = {}  # type: ignore[misc]


def test_weights_only_load_restores_the_weights_and_touches_no_optimizer(
    tmp_path, trained, tiny_llama_dir
):
    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=4), model, optimizer, {})
    other = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert load_checkpoint(ckpt, other).step == 4
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def one_rank_group(tmp_path):
    """A one-process gloo group, so FSDP2 can shard a model inside this test process."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_fsdp_sharded_state_is_gathered_whole_and_scattered_back(
    one_rank_group, tmp_path, trained, tiny_llama_dir
):
    from kd_train.trainer.distributed import DistContext, _fully_shard
    from torch.distributed.tensor import DTensor

    model, optimizer = trained
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    expected_optim = gather_state(model, optimizer).optimizer
    ckpt = save_checkpoint(tmp_path, TrainState(step=2), model, optimizer, {})
    sharded = _fully_shard(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), DistContext())
    sharded_opt = torch.optim.AdamW(sharded.parameters(), lr=5.0)
    assert any(isinstance(p, DTensor) for p in sharded.parameters())

    load_checkpoint(ckpt, sharded, sharded_opt)  # whole tensors in, shards kept
    full = gather_state(sharded, sharded_opt)  # shards in, whole CPU tensors out
    assert not any(isinstance(t, DTensor) for t in full.weights.values())
    assert all(t.device.type == "cpu" for t in (*full.weights.values(), *full.optimizer.values()))
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert sorted(full.optimizer) == sorted(expected_optim)
    assert all(torch.equal(full.optimizer[k], v) for k, v in expected_optim.items())
    assert full.param_groups[0]["lr"] == 1e-2


def test_a_tied_name_in_the_metadata_never_overwrites_a_tensor_the_file_stores(tmp_path, trained):
    from kd_train.trainer.checkpoint.state import load_weights
    from safetensors.torch import save_file

    model, _ = trained
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert not torch.equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"])
    path = tmp_path / "model.safetensors"
    # Metadata that claims lm_head is tied to the embedding, in a file that stores both.
    save_file(weights, str(path), metadata={"lm_head.weight": "model.embed_tokens.weight"})
    other = AutoModelForCausalLM.from_config(model.config)
    load_weights(path, other)
    assert torch.equal(other.lm_head.weight, weights["lm_head.weight"])
    assert torch.equal(other.model.embed_tokens.weight, weights["model.embed_tokens.weight"])


def test_a_file_missing_tensors_names_the_first_three_and_a_dangling_alias_is_ignored(
    tmp_path, trained
):
    from kd_train.trainer.checkpoint.state import load_weights
    from safetensors.torch import save_file

    model, _ = trained
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    dropped = sorted(weights)[:4]
    for name in dropped:
        del weights[name]
    path = tmp_path / "model.safetensors"
    # An alias whose kept name the file does not hold: nothing to restore, no KeyError.
    save_file(weights, str(path), metadata={dropped[0]: "no.such.tensor"})
    with pytest.raises(CheckpointError, match=r"missing \[") as excinfo:
        load_weights(path, AutoModelForCausalLM.from_config(model.config))
    message = str(excinfo.value)
    assert f"missing {dropped[:3]}," in message
    assert dropped[3] not in message
