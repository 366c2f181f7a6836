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
    ``{"format", "step", "files": {name: {"sha256", "bytes"}}, "config"}``.

Saving writes everything into a hidden sibling directory (:func:`kd_train.atomic.atomic_dir`),
writes the manifest last, then renames the directory into place, so a process killed while
saving leaves the previous checkpoint untouched (the half-written hidden directory is ignored
and removed later). Loading verifies every hash before reading a byte of state and never
unpickles anything. The learning-rate schedule is a pure function of the step (see
:func:`kd_train.trainer.loop.lr_at`), so the step is the scheduler's whole state.

The same format serves one process, DDP and FSDP2. :func:`gather_state` goes through
``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True, cpu_offload=True``:
FSDP's DTensor shards are all-gathered into whole CPU tensors on rank 0, and a plain module
gives its tensors as they are. :func:`load_checkpoint` hands the whole state to
``set_model_state_dict`` / ``set_optimizer_state_dict``, which keep each rank's shard under
FSDP. A checkpoint written by an FSDP run therefore resumes in one process, and the other
way round.

The parts, one job each: :mod:`~kd_train.trainer.checkpoint.files` saves, finds, loads and
prunes checkpoint directories; :mod:`~kd_train.trainer.checkpoint.manifest` hashes and
verifies their files; :mod:`~kd_train.trainer.checkpoint.state` turns the model and
optimiser into whole CPU tensors and back; :mod:`~kd_train.trainer.checkpoint.rng` captures
and restores every random generator.
"""

from kd_train.trainer.checkpoint.files import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_checkpoint,
)
from kd_train.trainer.checkpoint.manifest import (
    CHECKPOINT_FORMAT,
    STATE_FILES,
    CheckpointError,
    sha256_file,
    verify_checkpoint,
)
from kd_train.trainer.checkpoint.state import FullState, TrainState, gather_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "STATE_FILES",
    "CheckpointError",
    "FullState",
    "TrainState",
    "gather_state",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "sha256_file",
    "verify_checkpoint",
    "write_checkpoint",
]
