"""Resume refuses drift: an edited config.json or a changed dataset, tokenizer or teacher.

A tiny run is distilled through ``kd-train distill``; its ``config.json`` or its inputs are
then changed and ``kd-train resume`` must exit 2 with each changed key named, and train
nothing, unless ``--allow-change KEY`` names every change, which is then recorded.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from kd_train.cli import main
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer.checkpoint import (
    ConfigChange,
    ResumeDriftError,
    changed_keys,
    require_same_run,
)
from kd_train.trainer.checkpoint.drift import normalised


@pytest.fixture
def run_dir(tmp_path, tiny_llama_dir, tiny_teacher_dir, capsys):
    """A finished 3-step run (checkpoint every step) whose teacher is a private copy."""
    teacher = shutil.copytree(tiny_teacher_dir, tmp_path / "teacher")
    write_jsonl(tmp_path / "train.jsonl", tool_call_records(24))
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "hf", "path": str(teacher)},
        "data": {"train": "train.jsonl", "eval_fraction": 0.0, "max_length": 48},
        "optim": {"lr": 3e-3},
        "train": {"max_steps": 3, "batch_size": 4, "threads": 1, "checkpoint_every": 1},
        "output_dir": "run",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    capsys.readouterr()
    return tmp_path / "run"


def edit_config(run_dir, **changes):
    """Set dotted keys of ``run_dir/config.json``."""
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(json.dumps(config))


def snapshot(run_dir):
    """Every file under the run directory but config.json, with its SHA-256."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "config.json"
    }


def resume(run_dir, *allow, capsys):
    flags = [arg for key in allow for arg in ("--allow-change", key)]
    code = main(["resume", str(run_dir), "--no-progress", *flags])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("train__batch_size", 2, "train.batch_size: 4 -> 2"),
        ("train__seed", 1, "train.seed: 0 -> 1"),
        ("optim__lr", 0.001, "optim.lr: 0.003 -> 0.001"),
        ("data__max_length", 64, "data.max_length: 48 -> 64"),
        ("train__clip_norm", None, "train.clip_norm: 1.0 -> null"),
        ("loss__weights", {"kd": 2.0}, "loss.weights.kd: 1.0 -> 2.0"),
    ],
)
def test_an_edited_config_is_refused_naming_the_key_and_nothing_trains(
    run_dir, capsys, key, value, named
):
    edit_config(run_dir, train__max_steps=5, **{key: value})
    before = snapshot(run_dir)
    code, _, err = resume(run_dir, "train.max_steps", capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "resume refused: the run differs from the checkpoint step-00000003 it resumes" in err
    assert named in err
    assert "train.max_steps" not in err.split("it resumes;")[1].split("undo")[0]  # allowed
    assert snapshot(run_dir) == before  # nothing trained, nothing pruned, nothing written


def test_every_changed_key_is_named_with_the_flags_that_would_accept_them(run_dir, capsys):
    edit_config(run_dir, train__batch_size=2, train__seed=7, optim__lr=0.01)
    code, _, err = resume(run_dir, capsys=capsys)
    assert code == 2
    for named in ("optim.lr: 0.003 -> 0.01", "train.batch_size: 4 -> 2", "train.seed: 0 -> 7"):
        assert named in err
    assert (
        "--allow-change optim.lr --allow-change train.batch_size --allow-change train.seed" in err
    )


def test_a_changed_dataset_is_refused_by_its_fingerprint(run_dir, capsys):
    data = run_dir.parent / "train.jsonl"
    write_jsonl(data, tool_call_records(24, seed=5))
    before = snapshot(run_dir)
    code, _, err = resume(run_dir, capsys=capsys)
    assert code == 2
    assert "fingerprint.data.train: sha256:" in err
    assert snapshot(run_dir) == before


def test_a_changed_teacher_is_refused_by_its_fingerprint(run_dir, capsys):
    from safetensors.torch import load_file, save_file

    weights_file = run_dir.parent / "teacher" / "model.safetensors"
    weights = load_file(str(weights_file))
    name = sorted(weights)[0]
    weights[name] = weights[name] * 1.01
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    code, _, err = resume(run_dir, capsys=capsys)
    assert code == 2
    assert "fingerprint.teacher: sha256:" in err


def test_named_changes_are_accepted_and_recorded_in_the_state_and_run_manifest(run_dir, capsys):
    edit_config(run_dir, train__max_steps=5, optim__lr=0.001)
    code, out, err = resume(run_dir, "train.max_steps", "optim.lr", capsys=capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 5
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["allowed_changes"] == [
        {"step": 3, "key": "optim.lr", "before": 0.003, "after": 0.001},
        {"step": 3, "key": "train.max_steps", "before": 3, "after": 5},
    ]
    state = json.loads(
        (run_dir / "checkpoints" / "step-00000005" / "trainer_state.json").read_text()
    )
    assert state["state"]["changes"] == manifest["allowed_changes"]
    # The checkpoints after the resume hold the new config: resuming again needs no flag.
    code, out, err = resume(run_dir, capsys=capsys)
    assert code == 0, err
    assert (
        json.loads((run_dir / "run_manifest.json").read_text())["allowed_changes"]
        == (manifest["allowed_changes"])
    )


def test_a_changed_dataset_is_accepted_when_named(run_dir, capsys):
    write_jsonl(run_dir.parent / "train.jsonl", tool_call_records(24, seed=5))
    edit_config(run_dir, train__max_steps=4)
    code, _, err = resume(run_dir, "train.max_steps", "fingerprint.data.train", capsys=capsys)
    assert code == 0, err
    changes = json.loads((run_dir / "run_manifest.json").read_text())["allowed_changes"]
    assert [c["key"] for c in changes] == ["train.max_steps", "fingerprint.data.train"]


def test_an_allowed_key_that_did_not_change_is_refused_as_a_likely_typo(run_dir, capsys):
    edit_config(run_dir, train__max_steps=5)
    code, _, err = resume(run_dir, "train.max_step", capsys=capsys)
    assert code == 2
    assert "--allow-change train.max_step names no key that differs" in err
    assert "(keys that differ: train.max_steps)" in err


def test_a_moved_run_directory_is_no_drift(run_dir, capsys):
    moved = run_dir.parent / "moved"
    run_dir.rename(moved)
    edit_config(moved, train__max_steps=4)
    code, out, err = resume(moved, "train.max_steps", capsys=capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["run_dir"] == str(moved)


def test_non_finite_numbers_in_the_edited_config_json_are_refused_with_file_and_key(
    run_dir, capsys
):
    path = run_dir / "config.json"
    path.write_text(path.read_text().replace('"lr": 0.003', '"lr": NaN'))
    code, _, err = resume(run_dir, capsys=capsys)
    assert code == 2
    assert f"{path}: optim.lr: must be a finite number, got nan" in err


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"{", b"[1]"])
def test_an_unreadable_config_json_exits_2_without_a_traceback(run_dir, capsys, content):
    (run_dir / "config.json").write_bytes(content)
    code, _, err = resume(run_dir, capsys=capsys)
    assert code == 2
    assert "config.json" in err
    assert "Traceback" not in err


# ---- the comparison itself ------------------------------------------------------------------


def test_changed_keys_flattens_tables_and_compares_lists_whole():
    before = {"optim": {"betas": [0.9, 0.999], "lr": 1.0}, "student": {"config": {"a": 1}}}
    after = {"optim": {"betas": [0.9, 0.99], "lr": 1.0}, "student": {"config": {"a": 1, "b": 2}}}
    assert changed_keys(before, after) == {
        "optim.betas": ([0.9, 0.999], [0.9, 0.99]),
        "student.config.b": (None, 2),
    }


def test_an_absent_key_and_an_explicit_null_are_no_change():
    assert changed_keys({"teacher": {"http": None}}, {"teacher": {}}) == {}


def test_a_key_accepts_every_key_under_it():
    old = {"student": {"config": {"a": 1, "b": 2}}}
    new = {"student": {"config": {"a": 3, "b": 4}}}
    changes = require_same_run(old, {}, new, {}, ["student.config"], step=2)
    assert changes == [
        ConfigChange(2, "student.config.a", 1, 3),
        ConfigChange(2, "student.config.b", 2, 4),
    ]


def test_tokenizer_and_dataset_fingerprints_are_compared_and_named():
    old = {"tokenizer": "sha256:" + "a" * 64, "data.eval": None}
    new = {"tokenizer": "sha256:" + "b" * 64, "data.eval": "sha256:" + "c" * 64}
    with pytest.raises(ResumeDriftError) as info:
        require_same_run({}, old, {}, new)
    message = str(info.value)
    assert "\n" not in message
    parts = message.split("; ")
    assert "fingerprint.data.eval: null -> sha256:cccccccccccc..." in parts
    assert "fingerprint.tokenizer: sha256:aaaaaaaaaaaa... -> sha256:bbbbbbbbbbbb..." in parts


def test_a_stored_config_gets_the_defaults_of_keys_added_since(make_config):
    from kd_train.trainer import parse_config

    config = parse_config(make_config()).to_dict()
    older = json.loads(json.dumps(config))
    # As if written before these keys existed: they take their defaults.
    del older["distributed"]
    del older["loss"]["chunk_size"]
    assert changed_keys(normalised(older), config) == {}


def test_a_stored_config_this_version_cannot_read_is_compared_as_it_is():
    assert normalised({"train": {"max_steps": -1}}) == {"train": {"max_steps": -1}}


def test_the_loop_refuses_drift_for_library_callers_too(make_config, tmp_path):
    from kd_train.trainer import parse_config, train

    cfg = make_config(train={"max_steps": 2})
    train(parse_config(cfg), progress=False)
    cfg["train"]["batch_size"] = 2
    with pytest.raises(ResumeDriftError, match=r"train\.batch_size: 4 -> 2"):
        train(parse_config(cfg), resume=True, progress=False)
    cfg["train"]["max_steps"] = 3
    result = train(
        parse_config(cfg),
        resume=True,
        progress=False,
        allow_change=("train.batch_size", "train.max_steps"),
    )
    assert result.state.step == 3
    assert [c.key for c in result.state.changes] == ["train.batch_size", "train.max_steps"]
    assert Path(cfg["output_dir"], "checkpoints", "step-00000003").is_dir()


def test_tables_inside_lists_compare_whatever_their_key_order():
    from kd_train.trainer.checkpoint import changed_keys

    before = {"loss": {"hidden": {"layer_map": [{"s": 1, "t": 2}]}}}
    after = {"loss": {"hidden": {"layer_map": [{"t": 2, "s": 1}]}}}
    assert changed_keys(before, after) == {}
    assert changed_keys(after, before) == {}  # either side may hold the other order


def test_a_table_replaced_by_a_value_is_one_change():
    from kd_train.trainer.checkpoint import changed_keys

    assert changed_keys({"a": {"x": 1}}, {"a": 5}) == {"a": ({"x": 1}, 5)}


def test_an_absent_side_is_shown_as_absent():
    from kd_train.trainer.checkpoint.drift import _ABSENT, _show

    assert _show(_ABSENT) == "(absent)"
