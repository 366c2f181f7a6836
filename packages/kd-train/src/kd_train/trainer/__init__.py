"""The trainer: a readable distillation loop with checkpoints, exact resume and DDP.

Public names: :func:`~kd_train.trainer.loop.train` (the loop),
:func:`~kd_train.trainer.config.load_config` / :func:`~kd_train.trainer.config.parse_config`
and :class:`~kd_train.trainer.config.RunConfig` (the typed run config),
:func:`~kd_train.trainer.checkpoint.save_checkpoint`,
:func:`~kd_train.trainer.checkpoint.load_checkpoint`,
:func:`~kd_train.trainer.checkpoint.verify_checkpoint` and
:func:`~kd_train.trainer.checkpoint.latest_checkpoint`.
"""

from kd_train.trainer.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from kd_train.trainer.config import RunConfig, RunConfigError, load_config, parse_config
from kd_train.trainer.loop import TrainResult, train

__all__ = [
    "CheckpointError",
    "RunConfig",
    "RunConfigError",
    "TrainResult",
    "TrainState",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "parse_config",
    "save_checkpoint",
    "train",
    "verify_checkpoint",
]
