"""A checkpoint cannot be talked past: every fault planted here is refused with one line.

Each test plants one fault in a real checkpoint of a tiny student (a flipped byte, a manifest
that lists too little, a deleted or an added file, an edited state file, a truncated
manifest) and checks the refusal names the file (and the field), and that nothing else was
touched.
"""

import hashlib
import json
import math
import re

import pytest
import torch
from kd_train.trainer.checkpoint import (
    CHECKPOINT_FORMAT,
    STATE_FILES,
    CheckpointError,
    NonFiniteError,
    TrainState,
    gather_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


@pytest.fixture
def ckpt(tmp_path, trained):
    return save_checkpoint(tmp_path, TrainState(step=3, epoch=1, index=2), *trained, {"k": 1})


def manifest_of(ckpt):
    return json.loads((ckpt / "manifest.json").read_text())


def write_manifest(ckpt, manifest):
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def rehash(ckpt, name):
    """Record ``name``'s current size and SHA-256 in the manifest, as a forger would."""
    manifest = manifest_of(ckpt)
    data = (ckpt / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_manifest(ckpt, manifest)


def flip_a_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def refused(ckpt, model=None, optimizer=None):
    """The one-line refusal of both verify_checkpoint and load_checkpoint."""
    with pytest.raises(CheckpointError) as verified:
        verify_checkpoint(ckpt)
    if model is not None:
        with pytest.raises(CheckpointError) as loaded:
            load_checkpoint(ckpt, model, optimizer)
        assert str(loaded.value) == str(verified.value)
    message = str(verified.value)
    assert "\n" not in message
    return message


def test_a_flipped_weight_byte_with_an_empty_file_list_is_refused(ckpt, trained):
    flip_a_byte(ckpt / "model.safetensors")
    manifest = manifest_of(ckpt)
    manifest["files"] = {}
    write_manifest(ckpt, manifest)
    message = refused(ckpt, *trained)
    assert "does not list model.safetensors, optimizer.safetensors" in message


@pytest.mark.parametrize("name", STATE_FILES)
def test_a_manifest_that_leaves_out_one_file_is_refused(ckpt, name):
    flip_a_byte(ckpt / name, offset=len((ckpt / name).read_bytes()) // 2)
    manifest = manifest_of(ckpt)
    del manifest["files"][name]
    write_manifest(ckpt, manifest)
    assert f"does not list {name}:" in refused(ckpt)


@pytest.mark.parametrize("name", STATE_FILES)
def test_a_deleted_file_is_refused(ckpt, name):
    (ckpt / name).unlink()
    assert f"{ckpt / name} is missing" in refused(ckpt)


def test_a_file_the_manifest_does_not_list_is_refused(ckpt, trained):
    (ckpt / "extra.safetensors").write_bytes(b"not listed")
    assert "holds extra.safetensors, which its manifest does not list" in refused(ckpt, *trained)


def test_a_manifest_listing_a_file_that_is_no_checkpoint_file_is_refused(ckpt):
    (ckpt / "payload.pt").write_bytes(b"pickle")
    rehash(ckpt, "payload.pt")
    assert "lists payload.pt, which is no checkpoint file" in refused(ckpt)


def test_a_listed_name_that_is_a_directory_is_refused(ckpt):
    (ckpt / "rng.safetensors").unlink()
    (ckpt / "rng.safetensors").mkdir()
    assert "rng.safetensors is not a regular file" in refused(ckpt)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s["state"].update(step=-4), "state.step: must be >= 0, got -4"),
        (lambda s: s["state"].update(step="3"), "state.step: must be an integer, got '3'"),
        (lambda s: s["state"].update(epoch=1.5), "state.epoch: must be an integer"),
        (lambda s: s["state"].update(stopped_early=1), "state.stopped_early: must be true or"),
        (lambda s: s["state"].update(best_eval_loss=math.nan), "state.best_eval_loss: must be a"),
        (lambda s: s["state"].update(surprise=1), "state.surprise: unknown key (allowed: "),
        (lambda s: s.update(param_groups=[{"params": [-1]}]), "param_groups[0].params[0]"),
        (lambda s: s["param_groups"][0].update(lr=math.inf), "param_groups[0].lr: must be a"),
        (lambda s: s["rng"].update(python=[3, [1, 2], None]), "rng.python[1]: must have at"),
        (lambda s: s.pop("rng"), "rng: required key is missing"),
    ],
)
def test_an_edited_trainer_state_names_the_file_and_the_field(ckpt, trained, edit, field):
    path = ckpt / "trainer_state.json"
    saved = json.loads(path.read_text())
    edit(saved)
    path.write_text(json.dumps(saved))
    # Edited only: the size or the hash no longer matches.
    assert re.search(r"trainer_state\.json is (corrupted|truncated or resized)", refused(ckpt))
    # Edited and re-hashed, as a forger would: the schema names the field.
    rehash(ckpt, "trainer_state.json")
    message = refused(ckpt, *trained)
    assert message.startswith(f"{path}: ")
    assert field in message


def test_a_trainer_state_that_is_not_json_is_refused(ckpt):
    (ckpt / "trainer_state.json").write_text("{'state': 1")
    rehash(ckpt, "trainer_state.json")
    assert "trainer_state.json is not valid JSON" in refused(ckpt)


@pytest.mark.parametrize("cut", [0, 1, 40, -2])
def test_a_truncated_manifest_is_refused(ckpt, trained, cut):
    text = (ckpt / "manifest.json").read_text()
    (ckpt / "manifest.json").write_text(text[:cut])
    assert "manifest.json is corrupted" in refused(ckpt, *trained)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.update(step=-1), "step: must be >= 0"),
        (lambda m: m.update(files=[]), "files: must be a table/mapping"),
        (lambda m: m["files"]["rng.safetensors"].update(bytes="9"), "bytes: must be an integer"),
        (lambda m: m["files"]["rng.safetensors"].update(sha256="XYZ"), "sha256: String should"),
        (lambda m: m.update(signature="trust me"), "signature: unknown key"),
        (lambda m: m.pop("fingerprints"), "fingerprints: required key is missing"),
    ],
)
def test_an_edited_manifest_names_the_field(ckpt, edit, field):
    manifest = manifest_of(ckpt)
    edit(manifest)
    write_manifest(ckpt, manifest)
    message = refused(ckpt)
    assert message.startswith(f"{ckpt / 'manifest.json'}: ")
    assert field in message


@pytest.mark.parametrize("value", [1, None, "2", [2]])
def test_a_manifest_of_another_format_is_refused(ckpt, value):
    manifest = manifest_of(ckpt)
    manifest["format"] = value
    write_manifest(ckpt, manifest)
    assert f"this kd-train reads format {CHECKPOINT_FORMAT}" in refused(ckpt)


def test_a_manifest_that_is_not_an_object_is_refused(ckpt):
    (ckpt / "manifest.json").write_text("[1, 2]")
    assert "not a JSON object" in refused(ckpt)


def test_rng_tensors_of_another_layout_are_refused_by_name(ckpt, trained):
    tensors = load_file(str(ckpt / "rng.safetensors"))
    tensors["numpy_keys"] = tensors["numpy_keys"][:10].clone()
    save_file(tensors, str(ckpt / "rng.safetensors"))
    rehash(ckpt, "rng.safetensors")
    verify_checkpoint(ckpt)  # the hashes match what the forger wrote ...
    with pytest.raises(CheckpointError, match=r"rng\.safetensors: numpy_keys has shape \(10,\)"):
        load_checkpoint(ckpt, *trained)  # ... and the layout does not


def test_an_optimiser_tensor_of_no_parameter_is_refused_by_name(ckpt, trained):
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    tensors["999.exp_avg"] = tensors["0.exp_avg"].clone()
    save_file(tensors, str(ckpt / "optimizer.safetensors"))
    rehash(ckpt, "optimizer.safetensors")
    with pytest.raises(CheckpointError, match=r"a tensor '999\.exp_avg': not '<index>\.<slot>'"):
        load_checkpoint(ckpt, *trained)


def test_nan_weights_with_a_matching_hash_are_refused(ckpt, trained):
    weights = load_file(str(ckpt / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name][0] = math.nan
    save_file(weights, str(ckpt / "model.safetensors"))
    rehash(ckpt, "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"non-finite values in {name}"):
        load_checkpoint(ckpt, *trained)


def test_an_untouched_checkpoint_still_loads_after_all_the_checks(ckpt, trained, tiny_llama_dir):
    other = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    state = load_checkpoint(ckpt, other, torch.optim.AdamW(other.parameters()))
    assert (state.step, state.epoch, state.index) == (3, 1, 2)


# ---- latest_checkpoint: a bad latest checkpoint is never skipped silently ------------------


def test_a_corrupt_latest_checkpoint_is_named_with_the_previous_one_that_verifies(
    tmp_path, trained
):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, TrainState(step=step), *trained, {}, keep=3)
    root = tmp_path / "checkpoints"
    flip_a_byte(root / "step-00000003" / "model.safetensors")
    flip_a_byte(root / "step-00000002" / "rng.safetensors")
    with pytest.raises(CheckpointError) as info:
        latest_checkpoint(tmp_path)
    message = str(info.value)
    assert message.startswith(f"the latest checkpoint {root / 'step-00000003'} fails verification")
    assert "does not fall back on its own" in message
    assert (
        f"the previous checkpoint step-00000001 verifies: move {root / 'step-00000003'}" in message
    )
    # The user moves the bad ones away; then the good one is the latest.
    (root / "step-00000003").rename(tmp_path / "bad-3")
    (root / "step-00000002").rename(tmp_path / "bad-2")
    assert latest_checkpoint(tmp_path) == root / "step-00000001"


def test_the_advice_names_the_newest_checkpoint_that_verifies_not_the_oldest(tmp_path, trained):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, TrainState(step=step), *trained, {}, keep=3)
    root = tmp_path / "checkpoints"
    flip_a_byte(root / "step-00000003" / "model.safetensors")
    with pytest.raises(CheckpointError, match="the previous checkpoint step-00000002 verifies"):
        latest_checkpoint(tmp_path)


def test_a_corrupt_only_checkpoint_says_that_none_verifies(ckpt, tmp_path):
    manifest = manifest_of(ckpt)
    manifest["files"] = {}
    write_manifest(ckpt, manifest)
    with pytest.raises(CheckpointError, match="no earlier checkpoint verifies: start the run"):
        latest_checkpoint(tmp_path)


# ---- writing: verified before it takes its name, older ones pruned only then --------------


def test_a_checkpoint_that_fails_verification_after_writing_is_discarded_and_nothing_pruned(
    tmp_path, trained, monkeypatch
):
    import kd_train.trainer.checkpoint.files as files

    for step in (1, 2):
        save_checkpoint(tmp_path, TrainState(step=step), *trained, {}, keep=2)
    before = {p.name: manifest_of(p) for p in (tmp_path / "checkpoints").iterdir()}

    def lying_manifest(ckpt, step, config, fingerprints):
        real(ckpt, step, config, fingerprints)
        flip_a_byte(ckpt / "optimizer.safetensors")  # the disk returns other bytes

    real = files.write_manifest
    monkeypatch.setattr(files, "write_manifest", lying_manifest)
    with pytest.raises(CheckpointError, match=r"step 3 did not verify after writing .* discarded"):
        save_checkpoint(tmp_path, TrainState(step=3), *trained, {}, keep=2)
    after = {p.name: manifest_of(p) for p in (tmp_path / "checkpoints").iterdir()}
    assert after == before  # step 1 was not pruned, no step 3, no leftover temporary


def test_a_written_checkpoint_is_verified_and_carries_its_fingerprints(tmp_path, trained):
    prints = {"data.train": "sha256:" + "a" * 64, "teacher": None}
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), *trained, {}, fingerprints=prints)
    assert verify_checkpoint(ckpt)["fingerprints"] == prints
    assert sorted(manifest_of(ckpt)["files"]) == sorted(STATE_FILES)


@pytest.mark.parametrize("part", ["weights", "optimizer"])
def test_non_finite_weights_or_optimiser_state_are_never_written(tmp_path, trained, part):
    model, optimizer = trained
    good = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {}, keep=1)
    full = gather_state(model, optimizer)
    tensors = full.weights if part == "weights" else full.optimizer
    name = sorted(k for k, v in tensors.items() if v.is_floating_point() and v.dim())[0]
    tensors[name][0] = math.inf
    with pytest.raises(NonFiniteError, match=rf"^step 2: the .* hold non-finite values \({name}\)"):
        write_checkpoint(tmp_path, TrainState(step=2), full, {}, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]
    verify_checkpoint(good)


def test_a_non_finite_best_eval_loss_is_never_written(tmp_path, trained):
    state = TrainState(step=2, best_eval_loss=math.nan)
    with pytest.raises(NonFiniteError, match=r"^step 2: the trainer state .*best_eval_loss=nan"):
        save_checkpoint(tmp_path, state, *trained, {})
    assert not list((tmp_path / "checkpoints").iterdir())


# -- a forger who recomputes the hashes: what each state file must still be ---------------


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_a_rehashed_state_file_that_is_not_safetensors_is_refused(ckpt, trained, name):
    (ckpt / name).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    rehash(ckpt, name)
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)} is not (a )?safetensors"):
        load_checkpoint(ckpt, *trained)


def _rewrite(ckpt, name, edit):
    tensors = load_file(str(ckpt / name))
    edit(tensors)
    save_file(tensors, str(ckpt / name))
    rehash(ckpt, name)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.update(torch_cpu=t["torch_cpu"].float()), "torch_cpu is missing or not"),
        (lambda t: t.pop("numpy_keys"), "numpy_keys is missing or not torch.int64"),
        (lambda t: t.update(torch_cpu=t["torch_cpu"][:-1]), "torch_cpu has shape"),
    ],
)
def test_rng_tensors_of_another_dtype_or_shape_are_refused(ckpt, trained, edit, message):
    _rewrite(ckpt, "rng.safetensors", edit)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(ckpt, *trained)


def test_a_non_finite_optimiser_value_is_refused_naming_the_tensor(ckpt, trained):
    def poison(tensors):
        key = sorted(k for k in tensors if k.endswith("exp_avg"))[0]
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = math.nan

    _rewrite(ckpt, "optimizer.safetensors", poison)
    with pytest.raises(CheckpointError, match=r"non-finite values in \S*exp_avg"):
        load_checkpoint(ckpt, *trained)


@pytest.mark.parametrize(("slot", "shape"), [("exp_avg_sq", (1,)), ("step", (2,))])
def test_optimiser_state_of_another_shape_is_refused(ckpt, trained, slot, shape):
    # set_optimizer_state_dict took a [1] moment silently; AdamW would broadcast it
    def reshape(tensors):
        key = sorted(k for k in tensors if k.endswith(f".{slot}"))[0]
        tensors[key] = torch.zeros(shape)

    _rewrite(ckpt, "optimizer.safetensors", reshape)
    with pytest.raises(CheckpointError, match=re.escape(f".{slot} has shape {shape}")):
        load_checkpoint(ckpt, *trained)


def test_optimiser_groups_naming_a_parameter_beyond_the_model_are_refused(ckpt, trained):
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["param_groups"][0]["params"].append(10_000)
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    rehash(ckpt, "trainer_state.json")
    with pytest.raises(CheckpointError, match="parameter index beyond the"):
        load_checkpoint(ckpt, *trained)


def test_read_verified_reads_only_listed_present_regular_files(ckpt):
    from kd_train.trainer.checkpoint.manifest import read_manifest, read_verified

    manifest = read_manifest(ckpt)
    with pytest.raises(CheckpointError, match=r"does not list extra\.json"):
        read_verified(ckpt, "extra.json", manifest)
    (ckpt / "rng.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"rng\.safetensors is missing"):
        read_verified(ckpt, "rng.safetensors", manifest)
    (ckpt / "rng.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"rng\.safetensors cannot be read"):
        read_verified(ckpt, "rng.safetensors", manifest)


def test_a_changed_fingerprint_is_shown_short():
    from kd_train.trainer.checkpoint.drift import _show

    digest = "sha256:" + "ab" * 32
    assert _show(digest) == digest[:19] + "..."
    assert _show("plain") == '"plain"'  # any other value as JSON


def test_an_unknown_rng_tensor_is_refused_and_a_cuda_state_is_not(ckpt, trained):
    from kd_train.trainer.checkpoint.rng import _require_layout

    tensors = load_file(str(ckpt / "rng.safetensors"))
    _require_layout({**tensors, "torch_cuda_0": torch.zeros(16, dtype=torch.uint8)})
    _rewrite(ckpt, "rng.safetensors", lambda t: t.update(evil=torch.zeros(1)))
    with pytest.raises(CheckpointError, match="unknown tensor 'evil'"):
        load_checkpoint(ckpt, *trained)


def test_an_optimiser_index_one_past_the_last_parameter_is_refused(ckpt, trained):
    n = len(list(trained[0].parameters()))
    _rewrite(ckpt, "optimizer.safetensors", lambda t: t.update({f"{n}.step": torch.tensor(1.0)}))
    with pytest.raises(CheckpointError, match=rf"'{n}\.step': not '<index>\.<slot>'"):
        load_checkpoint(ckpt, *trained)


def test_groups_naming_the_index_one_past_the_last_parameter_are_refused(ckpt, trained):
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["param_groups"][0]["params"].append(len(list(trained[0].parameters())))
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    rehash(ckpt, "trainer_state.json")
    with pytest.raises(CheckpointError, match="parameter index beyond the"):
        load_checkpoint(ckpt, *trained)


# ---- the manifest and the optimiser state as they are written and read back --------------


def test_a_read_manifest_cannot_be_changed_in_memory(ckpt):
    from kd_train.trainer.checkpoint.manifest import read_manifest
    from pydantic import ValidationError

    manifest = read_manifest(ckpt)
    with pytest.raises(ValidationError, match="frozen"):
        manifest.step = 99
    assert read_manifest(ckpt).step == manifest.step


def test_a_manifest_with_a_non_finite_config_value_is_refused_and_the_old_one_kept(ckpt):
    from kd_train.trainer.checkpoint.manifest import write_manifest as write

    before = (ckpt / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match="not JSON compliant"):
        write(ckpt, 1, {"optim": {"lr": math.nan}}, {})
    assert (ckpt / "manifest.json").read_bytes() == before


def test_optimiser_slots_that_are_plain_numbers_are_stored_as_tensors_and_none_copied():
    import warnings

    from kd_train.trainer.checkpoint.state import _flatten_optimizer

    avg = torch.arange(4.0)
    optim = {
        "state": {"w": {"step": 3.0, "exp_avg": avg}},
        "param_groups": [{"params": ["w"], "lr": 0.1}],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.tensor(<a tensor>) warns about copy-constructing
        tensors, groups = _flatten_optimizer(optim)
    assert torch.equal(tensors["0.step"], torch.tensor(3.0))
    assert tensors["0.exp_avg"].data_ptr() == avg.data_ptr()
    assert groups == [{"params": [0], "lr": 0.1}]


def test_adamw_groups_load_back_equal_to_the_saved_ones_betas_a_tuple(tmp_path, trained):
    from kd_train.trainer.checkpoint import load_checkpoint

    model, optimizer = trained
    ckpt = save_checkpoint(tmp_path, TrainState(step=1), model, optimizer, {})
    other = AutoModelForCausalLM.from_config(model.config)
    other_opt = torch.optim.AdamW(other.parameters(), lr=5.0, betas=[0.5, 0.6])
    load_checkpoint(ckpt, other, other_opt)
    assert other_opt.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    assert isinstance(other_opt.param_groups[0]["betas"], tuple)
