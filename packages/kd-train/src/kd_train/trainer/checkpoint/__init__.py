"""Checkpoints: safetensors + JSON, a SHA-256 manifest, written atomically, verified on load.

A checkpoint is a directory ``RUN_DIR/checkpoints/step-NNNNNNNN/`` holding

``model.safetensors``
    the student's full weights. Tied parameters are stored once, under the first of their
    names in sorted order; the file's metadata maps each dropped name to the kept one
    (the layout ``safetensors.torch.save_model`` writes).
``optimizer.safetensors``
    every AdamW state tensor, keyed ``"<param index>.<name>"`` (indices in the order of
    the optimiser's ``param_groups``, as ``Optimizer.state_dict`` numbers them).
``rng.safetensors``
    the torch CPU (and CUDA) generator states and NumPy's Mersenne Twister keys.
``trainer_state.json``
    :class:`TrainState` (step, data cursor, early-stopping counters), the optimiser's
    ``param_groups`` and the rest of the Python / NumPy RNG states.
``manifest.json``
    ``{"format", "step", "files": {name: {"sha256", "bytes"}}, "config", "fingerprints"}``:
    every file above with its size and SHA-256, the run config, and the fingerprints of the
    datasets, tokenizer and teacher that resume compares (:mod:`~.drift`).

Saving refuses weights or optimiser state that hold a NaN or an infinity
(:mod:`~.finite`), writes everything into a hidden sibling directory
(:func:`kd_train.atomic.atomic_dir`), writes the manifest last, reads the whole checkpoint
back and verifies it, then renames the directory into place; older checkpoints are pruned
only after that. A process killed while saving leaves the previous checkpoint untouched (the
half-written hidden directory is ignored and removed later). Loading reads only the files
the manifest lists, after checking each one's size and hash; the manifest must list every
state file, the directory must hold nothing else, and the JSON state files are
schema-checked, so an edited file is refused with one line naming the file and the field.
Nothing is ever unpickled. :func:`latest_checkpoint` verifies the newest checkpoint and, if
it fails, stops with a message naming it and the newest one that verifies: kd-train never
falls back to an older checkpoint silently. The learning-rate schedule is a pure function
of the step (see :func:`kd_train.trainer.loop.lr_at`), so the step is the scheduler's whole
state.

The same format serves one process, DDP and FSDP2. :func:`gather_state` goes through
``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True, cpu_offload=True``:
FSDP's DTensor shards are all-gathered into whole CPU tensors on rank 0, and a plain module
gives its tensors as they are. :func:`load_checkpoint` hands the whole state to
``set_model_state_dict`` / ``set_optimizer_state_dict``, which keep each rank's shard under
FSDP. A checkpoint written by an FSDP run therefore resumes in one process, and the other
way round.

The parts, one job each: :mod:`~kd_train.trainer.checkpoint.files` saves, verifies, finds,
loads and prunes checkpoint directories; :mod:`~kd_train.trainer.checkpoint.manifest` hashes
and verifies their files; :mod:`~kd_train.trainer.checkpoint.state` turns the model and
optimiser into whole CPU tensors and back and holds the state file's schema;
:mod:`~kd_train.trainer.checkpoint.rng` captures and restores every random generator;
:mod:`~kd_train.trainer.checkpoint.finite` stops a run on a non-finite value;
:mod:`~kd_train.trainer.checkpoint.drift` compares a resumed run with its checkpoint.
"""

from kd_train.trainer.checkpoint.drift import (
    ResumeDriftError,
    changed_keys,
    check_resume,
    require_same_run,
)
from kd_train.trainer.checkpoint.files import (
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)
from kd_train.trainer.checkpoint.finite import NonFiniteError, require_finite_step
from kd_train.trainer.checkpoint.manifest import (
    CHECKPOINT_FORMAT,
    STATE_FILES,
    CheckpointError,
    sha256_file,
)
from kd_train.trainer.checkpoint.state import ConfigChange, FullState, TrainState, gather_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "STATE_FILES",
    "CheckpointError",
    "ConfigChange",
    "FullState",
    "NonFiniteError",
    "ResumeDriftError",
    "TrainState",
    "changed_keys",
    "check_resume",
    "checkpoint_dirs",
    "gather_state",
    "latest_checkpoint",
    "load_checkpoint",
    "require_finite_step",
    "require_same_run",
    "save_checkpoint",
    "sha256_file",
    "verify_checkpoint",
    "write_checkpoint",
]
