"""Nothing from an artifact executes: a payload planted in each export format never runs.

Each plant rewrites ``contract.json`` to match (whoever writes an artifact writes its
contract, so the hashes are no defence), then runs ``kd-convert verify`` with and without
``--trust-artifact``: a one-line error, exit code 2, and no marker file. The genuine exports
of pickled formats load only with trust; ONNX and Core ML need none.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from kd_convert.cli import main
from kd_convert.contract import CONTRACT_FILE, PARITY_FILE, open_runner, verify
from kd_convert.errors import UntrustedArtifactError
from kd_convert.fingerprint import hash_tree
from kd_convert.formats import exported, torchscript
from kd_train.artifacts import archive_problems, pickle_problems

pytestmark = pytest.mark.xdist_group("kd-convert-exports")


class Payload:
    """Unpickling this writes ``marker``: the code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def payload(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps(Payload(marker), protocol=protocol)


def torch_save_zip(inner: bytes) -> bytes:
    """A ``torch.save`` zip archive whose ``data.pkl`` is ``inner``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", inner)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def rewrite(path: Path, change: Callable[[str, bytes], bytes | None], add=()) -> None:
    """Rewrite the zip at ``path``: ``change(name, data)`` returns new bytes (None: keep)."""
    members = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            data = archive.read(name)
            members.append((name, change(name, data) or data))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in [*members, *add]:
            archive.writestr(name, data)


def forge_contract(out: Path) -> None:
    """Re-hash the planted files into the contract, as the artifact's author would."""
    contract = json.loads((out / CONTRACT_FILE).read_text())
    contract["files"] = hash_tree(out, exclude=(CONTRACT_FILE, PARITY_FILE))
    (out / CONTRACT_FILE).write_text(json.dumps(contract))


def use_pickle_weight(marker: Path) -> Callable[[str, bytes], bytes | None]:
    """``torch.export``: a weights config entry marked ``use_pickle``, its file a payload."""

    def change(name: str, data: bytes) -> bytes | None:
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            entry = config["config"]["decoder.embed_tokens.weight"]
            entry["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return payload(marker)
        return None

    return change


def opaque_constant(marker: Path) -> Callable[[str, bytes], bytes | None]:
    """``torch.export``: a constant turned into an opaque object (read with ``pickle.loads``)."""

    def change(name: str, data: bytes) -> bytes | None:
        if name.endswith("_constants_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["path_name"] = "opaque_obj_0"
            return json.dumps(config).encode()
        return None

    return change


def sample_inputs(marker: Path) -> Callable[[str, bytes], bytes | None]:
    """``torch.export``: sample inputs torch retries with ``weights_only=False``."""

    def change(name: str, data: bytes) -> bytes | None:
        return torch_save_zip(payload(marker)) if "sample_inputs" in name else None

    return change


def script_pickle(member: str, protocol: int = 2):
    """TorchScript: ``data.pkl`` or ``constants.pkl`` replaced by a ``__reduce__`` payload."""

    def plant(marker: Path) -> Callable[[str, bytes], bytes | None]:
        def change(name: str, data: bytes) -> bytes | None:
            return payload(marker, protocol) if name.endswith(f"/{member}") else None

        return change

    return plant


def keep(marker: Path) -> Callable[[str, bytes], bytes | None]:
    return lambda name, data: None


PLANTS = {
    "pt2-use-pickle-weight": ("exported", use_pickle_weight, ()),
    "pt2-opaque-constant": ("exported", opaque_constant, ("model/data/constants/opaque_obj_0",)),
    "pt2-sample-inputs": ("exported", sample_inputs, ()),
    "pt2-legacy-weights": ("exported", keep, ("model/data/weights/model.pt",)),
    "pt2-aotinductor": ("exported", keep, ("model/data/aotinductor/model/model.so",)),
    "ts-data-pkl": ("torchscript", script_pickle("data.pkl"), ()),
    "ts-constants-pkl": ("torchscript", script_pickle("constants.pkl"), ()),
    "ts-data-pkl-protocol-4": ("torchscript", script_pickle("data.pkl", 4), ()),
}


@pytest.fixture
def planted(export_once, tmp_path):
    """Return ``plant(case) -> (export dir, marker)`` with the payload and a forged contract."""

    def plant(case: str) -> tuple[Path, Path]:
        fmt, change, extra = PLANTS[case]
        out = tmp_path / case
        shutil.copytree(export_once(fmt).out_dir, out)
        marker = tmp_path / f"{case}.ran"
        artifact = out / export_once(fmt).artifact.name
        rewrite(artifact, change(marker), add=[(name, payload(marker)) for name in extra])
        forge_contract(out)
        return out, marker

    return plant


def one_line_exit_2(argv: list[str], capsys) -> str:
    capsys.readouterr()  # what the fixtures' exports printed
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize(
    "case", ["pt2-use-pickle-weight", "pt2-sample-inputs", "pt2-legacy-weights"]
)
def test_the_plants_are_live_payloads_that_a_bare_torch_load_runs(planted, case):
    """The control: past kd's check, ``torch.export.load`` runs these payloads (then fails)."""
    out, marker = planted(case)
    with contextlib.suppress(Exception):
        torch.export.load(out / "model.pt2")
    assert marker.exists()


@pytest.mark.parametrize("case", list(PLANTS))
def test_a_planted_payload_never_runs_without_trust(planted, case, capsys):
    out, marker = planted(case)
    err = one_line_exit_2(["verify", str(out)], capsys)
    assert not marker.exists()
    assert "--trust-artifact" in err


@pytest.mark.parametrize("case", list(PLANTS))
def test_a_planted_payload_is_refused_even_with_trust(planted, case, capsys):
    out, marker = planted(case)
    err = one_line_exit_2(["verify", str(out), "--trust-artifact"], capsys)
    assert not marker.exists()
    assert "with or without --trust-artifact" in err


@pytest.mark.parametrize("case", list(PLANTS))
def test_every_runner_refuses_a_planted_payload(planted, case):
    out, marker = planted(case)
    module = exported if PLANTS[case][0] == "exported" else torchscript
    artifact = out / module.ARTIFACT
    for trust in (False, True):
        with pytest.raises(UntrustedArtifactError, match=str(artifact)):
            module.load_runner(artifact, trust_artifact=trust)
        with pytest.raises(UntrustedArtifactError):
            open_runner(out, trust_artifact=trust)
    if module is exported:
        with pytest.raises(UntrustedArtifactError):
            exported.load_graph(artifact)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_a_genuine_pickled_export_loads_only_with_trust(export_once, fmt, capsys):
    out = export_once(fmt).out_dir
    assert archive_problems(export_once(fmt).artifact) == []
    err = one_line_exit_2(["verify", str(out)], capsys)
    assert f"{export_once(fmt).artifact} is a " in err
    assert "pass --trust-artifact" in err
    assert main(["verify", str(out), "--trust-artifact"]) == 0
    with pytest.raises(UntrustedArtifactError, match="trust_artifact=True"):
        verify(out)


@pytest.mark.parametrize("fmt", ["onnx", "coreml"])
def test_formats_read_without_pickle_verify_without_trust(export_once, fmt, capsys):
    assert main(["verify", str(export_once(fmt).out_dir)]) == 0
    assert "matches its contract" in capsys.readouterr().out


def test_a_tampered_pickled_export_is_refused_by_its_hash_before_anything_loads(
    export_once, tmp_path, capsys
):
    out = tmp_path / "pt2"
    shutil.copytree(export_once("exported").out_dir, out)
    marker = tmp_path / "ran"
    rewrite(out / "model.pt2", use_pickle_weight(marker))
    err = one_line_exit_2(["verify", str(out), "--trust-artifact"], capsys)
    assert "model.pt2 has SHA-256" in err
    assert not marker.exists()


def test_the_pickle_scan_reads_opcodes_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    for protocol in (0, 2, 4, 5):
        assert pickle_problems(payload(marker, protocol)) == [
            f"imports {'__builtin__' if protocol < 3 else 'builtins'}.exec"
        ]
    assert not marker.exists()
    assert pickle_problems(b"not a pickle")[0].startswith("is not a pickle kd can read")


def test_a_file_that_is_no_archive_is_refused_without_loading(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"junk")
    with pytest.raises(UntrustedArtifactError, match="not a readable zip archive"):
        exported.load_runner(path, trust_artifact=True)
