"""A checkpoint's manifest: the SHA-256 and size of every state file, checked before loading.

``manifest.json`` is ``{"format", "step", "files": {name: {"sha256", "bytes"}}, "config",
"fingerprints"}``; it is written last. Loading trusts nothing it has not checked
(:func:`verify_files`, then :func:`~kd_train.trainer.checkpoint.verify_checkpoint`): the
manifest is schema-checked (:class:`Manifest`), it must list exactly the :data:`STATE_FILES`
(a manifest with an empty or partial list is refused), the directory must hold no file the
manifest does not list, and every listed file must have its size and SHA-256. The small JSON
state file is parsed from the very bytes whose hash was checked (:func:`read_verified`) and
schema-checked too.

The manifest protects against accidents and careless edits (a flipped byte, a truncated
copy, a hand-edited state file, a file deleted or added): it is no signature, and whoever
can rewrite the files and recompute their hashes can forge one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kd_train.errors import KDTrainError
from kd_train.typed_config import error_lines, plain_type

#: Version of the checkpoint layout, written as ``"format"`` in the manifest. Format 2 added
#: the fingerprints and requires the manifest to list every state file.
CHECKPOINT_FORMAT = 2
#: The files a checkpoint holds besides ``manifest.json``; the manifest lists each, and only
#: these.
STATE_FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "rng.safetensors",
    "trainer_state.json",
)
MANIFEST = "manifest.json"

_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class CheckpointError(KDTrainError):
    """A checkpoint is missing, corrupted or truncated; the message names the file."""


class StateModel(BaseModel):
    """Base of the schemas of the JSON files a checkpoint holds: strict, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Show plain types in the signature (no validation metadata) to readers and docs."""
        super().__pydantic_init_subclass__(**kwargs)
        signature = inspect.signature(cls)
        params = [
            p.replace(annotation=plain_type(p.annotation)) for p in signature.parameters.values()
        ]
        cls.__signature__ = signature.replace(parameters=params)


class FileEntry(StateModel):
    """One state file as the manifest lists it."""

    sha256: _Sha256 = Field(description="Hex SHA-256 of the file's bytes.")
    bytes: Annotated[int, Field(ge=0)] = Field(description="The file's size.")


class Manifest(StateModel):
    """The schema of ``manifest.json`` (see the module docstring)."""

    format: int = Field(description="The layout version, :data:`CHECKPOINT_FORMAT`.")
    step: Annotated[int, Field(ge=0)] = Field(description="The optimiser step it was saved at.")
    files: dict[str, FileEntry] = Field(description="Every state file: size and SHA-256.")
    config: dict[str, Any] = Field(description="The run config the state was trained with.")
    fingerprints: dict[str, str | None] = Field(
        description="Datasets, tokenizer and teacher the run used (resume compares them)."
    )


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(
    ckpt: Path, step: int, config: dict[str, Any], fingerprints: dict[str, str | None]
) -> None:
    """Write ``ckpt/manifest.json`` describing the :data:`STATE_FILES` already in ``ckpt``."""
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "files": {name: _describe(ckpt / name) for name in STATE_FILES},
        "config": config,
        "fingerprints": fingerprints,
    }
    text = json.dumps(manifest, indent=2, allow_nan=False)
    (ckpt / MANIFEST).write_text(text, encoding="utf-8")


def verify_files(ckpt: Path) -> Manifest:
    """Check the manifest of ``ckpt`` and every file's size and SHA-256; return the manifest.

    :func:`~kd_train.trainer.checkpoint.verify_checkpoint` adds the state file's schema.

    Raises:
        CheckpointError: one line naming the first missing, unlisted, truncated, corrupted
            or malformed file.
    """
    ckpt = Path(ckpt)
    manifest = read_manifest(ckpt)
    listed = set(manifest.files)
    unlisted_needed = [name for name in STATE_FILES if name not in listed]
    if unlisted_needed:
        raise CheckpointError(
            f"checkpoint manifest {ckpt / MANIFEST} does not list {', '.join(unlisted_needed)}: "
            f"a checkpoint's manifest lists every state file ({', '.join(STATE_FILES)}) with "
            "its size and SHA-256, so this checkpoint cannot be trusted"
        )
    unknown = sorted(listed - set(STATE_FILES))
    if unknown:
        raise CheckpointError(
            f"checkpoint manifest {ckpt / MANIFEST} lists {', '.join(unknown)}, which is no "
            f"checkpoint file (allowed: {', '.join(STATE_FILES)})"
        )
    extra = sorted(p.name for p in ckpt.iterdir() if p.name not in listed and p.name != MANIFEST)
    if extra:
        raise CheckpointError(
            f"checkpoint {ckpt} holds {', '.join(extra)}, which its manifest does not list; "
            "a checkpoint holds only the files its manifest lists"
        )
    for name in STATE_FILES:
        _check_file(ckpt / name, manifest.files[name])
    return manifest


def read_manifest(ckpt: Path) -> Manifest:
    """Read and schema-check ``ckpt/manifest.json`` (files are not checked here)."""
    path = Path(ckpt) / MANIFEST
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"checkpoint {ckpt} has no {MANIFEST}; it is not a kd-train checkpoint"
        ) from exc
    except (ValueError, OSError) as exc:  # JSON, UTF-8, or a directory named manifest.json
        raise CheckpointError(f"checkpoint manifest {path} is corrupted ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint manifest {path} is corrupted: not a JSON object")
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint manifest {path} has format {data.get('format')!r}; this kd-train reads "
            f"format {CHECKPOINT_FORMAT} (a checkpoint of an older kd-train resumes with that "
            "version)"
        )
    return parse_state(Manifest, data, path)


def read_verified(ckpt: Path, name: str, manifest: Manifest) -> bytes:
    """The bytes of the state file ``name``, after checking their size and SHA-256.

    A small JSON file is parsed from the bytes returned here, so what is parsed is exactly
    what was verified.
    """
    path = Path(ckpt) / name
    entry = manifest.files.get(name)
    if entry is None:
        raise CheckpointError(f"checkpoint manifest {Path(ckpt) / MANIFEST} does not list {name}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint file {path} cannot be read ({exc})") from None
    _compare(path, len(data), hashlib.sha256(data).hexdigest(), entry)
    return data


def parse_state(model: type[StateModel], data: Any, path: Path) -> Any:
    """Validate ``data`` (a parsed JSON document) into ``model``; one-line error naming fields.

    >>> from pathlib import Path
    >>> from kd_train.trainer.checkpoint.manifest import FileEntry, parse_state
    >>> parse_state(FileEntry, {"sha256": "0" * 64, "bytes": -1}, Path("m.json"))
    Traceback (most recent call last):
    ...
    kd_train.trainer.checkpoint.manifest.CheckpointError: m.json: bytes: must be >= 0, got -1 \
(an edited or corrupted checkpoint state file; this checkpoint cannot be used)
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CheckpointError(state_error(exc, model, path)) from None


def state_error(exc: ValidationError, model: type[BaseModel], path: Path) -> str:
    """One line for a state file that fails its schema, naming the file and the fields."""
    problems = "; ".join(error_lines(exc, model, str(path)))
    return (
        f"{problems} (an edited or corrupted checkpoint state file; this checkpoint cannot be used)"
    )


def _check_file(path: Path, entry: FileEntry) -> None:
    if path.is_symlink() or not path.is_file():
        what = "missing" if not path.exists() else "not a regular file"
        raise CheckpointError(f"checkpoint file {path} is {what}")
    found = _describe(path)
    _compare(path, found["bytes"], found["sha256"], entry)


def _compare(path: Path, size: int, sha256: str, entry: FileEntry) -> None:
    if size != entry.bytes:
        raise CheckpointError(
            f"checkpoint file {path} is truncated or resized: {size} bytes, manifest says "
            f"{entry.bytes}; this checkpoint cannot be used"
        )
    if sha256 != entry.sha256:
        raise CheckpointError(
            f"checkpoint file {path} is corrupted: SHA-256 {sha256[:16]}... does not match the "
            f"manifest's {entry.sha256[:16]}...; this checkpoint cannot be used"
        )


def _describe(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
