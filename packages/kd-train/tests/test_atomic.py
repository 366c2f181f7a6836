"""Atomic writes: a reader finds the old file or directory or the complete new one."""

import os
import stat
import subprocess
import sys

import pytest
from kd_train.atomic import atomic_dir, atomic_open, atomic_path, atomic_write_text


class BoomError(Exception):
    pass


def write_then_fail(write, *args):
    """Run one write, then fail as an exporter or a checkpoint writer may halfway."""
    write(*args)
    raise BoomError


def write_tree(root, files):
    for name, text in files.items():
        (root / name).write_text(text)


def tree(root):
    return {p.name: p.read_text() for p in sorted(root.iterdir())}


def leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name != name)


def test_new_directory_appears_whole_and_no_temporary_is_left(tmp_path):
    target = tmp_path / "out" / "student"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir()
        assert not target.exists()
        write_tree(tmp, {"a.json": "1", "b.bin": "2"})
    assert tree(target) == {"a.json": "1", "b.bin": "2"}
    assert leftovers(target.parent, "student") == []


def test_existing_directory_is_replaced_whole(tmp_path):
    target = tmp_path / "student"
    target.mkdir()
    write_tree(target, {"old.bin": "old", "a.json": "old"})
    with atomic_dir(target) as tmp:
        write_tree(tmp, {"a.json": "new"})
    assert tree(target) == {"a.json": "new"}
    assert leftovers(tmp_path, "student") == []


def test_a_block_that_raises_midway_leaves_the_old_directory_and_no_temporary(tmp_path):
    target = tmp_path / "student"
    target.mkdir()
    write_tree(target, {"a.json": "old"})
    with pytest.raises(BoomError), atomic_dir(target) as tmp:
        write_then_fail(write_tree, tmp, {"a.json": "new", "b.bin": "half"})
    assert tree(target) == {"a.json": "old"}
    assert leftovers(tmp_path, "student") == []


def test_a_block_that_raises_before_any_target_exists_leaves_nothing(tmp_path):
    with pytest.raises(BoomError), atomic_dir(tmp_path / "student") as tmp:
        write_then_fail(write_tree, tmp, {"a.json": "new"})
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_the_way_is_replaced_by_the_directory(tmp_path):
    target = tmp_path / "student"
    target.write_text("not a directory")
    with atomic_dir(target) as tmp:
        write_tree(tmp, {"a.json": "new"})
    assert tree(target) == {"a.json": "new"}


def test_a_failed_final_rename_puts_the_old_directory_back(tmp_path, monkeypatch):
    target = tmp_path / "student"
    target.mkdir()
    write_tree(target, {"a.json": "old"})
    real_replace = os.replace

    def refuse_the_new_directory(src, dst):
        if str(src).endswith(".tmp/student"):  # the new one, not the old one going aside
            raise OSError("disk went away")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_the_new_directory)
    with pytest.raises(OSError, match="disk went away"), atomic_dir(target) as tmp:
        write_tree(tmp, {"a.json": "new"})
    assert tree(target) == {"a.json": "old"}
    assert leftovers(tmp_path, "student") == []


def test_a_process_killed_while_writing_leaves_the_old_directory(tmp_path):
    target = tmp_path / "student"
    target.mkdir()
    write_tree(target, {"a.json": "old"})
    script = (
        "import os, sys\n"
        "from kd_train.atomic import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'a.json').write_text('new')\n"
        "    os._exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    assert proc.returncode == 3
    assert tree(target) == {"a.json": "old"}
    (scratch,) = leftovers(tmp_path, "student")  # hidden, never the target's name
    assert scratch.startswith(".student.")
    assert scratch.endswith(".tmp")


def test_a_file_artifact_replaces_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.name == "model.onnx"
        assert not tmp.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert leftovers(tmp_path, "model.onnx") == []


def test_side_files_written_next_to_the_artifact_are_moved_next_to_the_target(tmp_path):
    target = tmp_path / "model.onnx"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"graph")
        (tmp.parent / "model.onnx.data").write_bytes(b"weights")
    assert target.read_bytes() == b"graph"
    assert (tmp_path / "model.onnx.data").read_bytes() == b"weights"
    assert leftovers(tmp_path, "model.onnx") == ["model.onnx.data"]


def test_a_directory_artifact_replaces_the_old_directory(tmp_path):
    target = tmp_path / "model.mlpackage"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert tree(target) == {"new": "new"}
    assert leftovers(tmp_path, "model.mlpackage") == []


def test_an_artifact_whose_export_raises_leaves_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(BoomError), atomic_path(target) as tmp:
        write_then_fail(tmp.write_bytes, b"half")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path, "model.pt") == []


def test_a_file_write_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "run.json"
    atomic_write_text(target, "old")
    with pytest.raises(BoomError), atomic_open(target) as handle:
        write_then_fail(handle.write, "half")
    assert target.read_text() == "old"
    assert leftovers(tmp_path, "run.json") == []


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode_of(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_an_atomic_file_gets_ordinary_permissions(tmp_path):
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    assert mode_of(tmp_path / "report.html") == 0o644


@pytest.mark.usefixtures("umask_022")
def test_an_atomic_file_follows_a_stricter_umask(tmp_path):
    os.umask(0o077)
    atomic_write_text(tmp_path / "secret.json", "{}")
    assert mode_of(tmp_path / "secret.json") == 0o600


@pytest.mark.usefixtures("umask_022")
def test_an_atomic_directory_and_its_files_get_ordinary_permissions(tmp_path):
    with atomic_dir(tmp_path / "student") as tmp:
        atomic_write_text(tmp / "config.json", "{}")
    modes = (mode_of(tmp_path / "student"), mode_of(tmp_path / "student" / "config.json"))
    assert modes == (0o755, 0o644)


@pytest.mark.usefixtures("umask_022")
def test_an_atomic_artifact_gets_ordinary_permissions(tmp_path):
    with atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"graph")
    assert mode_of(tmp_path / "model.onnx") == 0o644
