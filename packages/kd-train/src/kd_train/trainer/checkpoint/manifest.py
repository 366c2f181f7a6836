"""A checkpoint's manifest: the SHA-256 and size of every state file, checked before loading.

``manifest.json`` is ``{"format", "step", "files": {name: {"sha256", "bytes"}}, "config"}``;
it is written last, so a directory whose manifest matches every file is complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kd_train.errors import KDTrainError

#: Version of the checkpoint layout, written as ``"format"`` in the manifest.
CHECKPOINT_FORMAT = 1
#: The files a checkpoint holds besides ``manifest.json``, each listed in the manifest.
STATE_FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "rng.safetensors",
    "trainer_state.json",
)


class CheckpointError(KDTrainError):
    """A checkpoint is missing, corrupted or truncated; the message names the file."""


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(ckpt: Path, step: int, config: dict[str, Any]) -> None:
    """Write ``ckpt/manifest.json`` describing the :data:`STATE_FILES` already in ``ckpt``."""
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "files": {name: _describe(ckpt / name) for name in STATE_FILES},
        "config": config,
    }
    (ckpt / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def verify_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Check every file of ``ckpt`` against its manifest; return the manifest.

    Raises:
        CheckpointError: naming the first missing, truncated or corrupted file.
    """
    manifest_path = Path(ckpt) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"checkpoint {ckpt} has no manifest.json; it is not a kd-train checkpoint"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint manifest {manifest_path} is corrupted ({exc}); "
            "delete this checkpoint directory to resume from the previous one"
        ) from exc
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {ckpt} has format {manifest.get('format')!r}; this kd-train reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    for name, expected in manifest["files"].items():
        path = Path(ckpt) / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing")
        found = _describe(path)
        if found["bytes"] != expected["bytes"]:
            raise CheckpointError(
                f"checkpoint file {path} is truncated or resized: {found['bytes']} bytes, "
                f"manifest says {expected['bytes']}; delete {ckpt} to resume from the "
                "previous checkpoint"
            )
        if found["sha256"] != expected["sha256"]:
            raise CheckpointError(
                f"checkpoint file {path} is corrupted: SHA-256 {found['sha256'][:16]}... does "
                f"not match the manifest's {expected['sha256'][:16]}...; delete {ckpt} to "
                "resume from the previous checkpoint"
            )
    return dict(manifest)


def _describe(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
