"""The trainer: a readable distillation loop with checkpoints, exact resume and DDP.

Public names: :func:`train` (the loop), :func:`load_config` / :func:`parse_config` and
:class:`RunConfig` (the typed run config), :func:`save_checkpoint`,
:func:`load_checkpoint`, :func:`verify_checkpoint`, :func:`latest_checkpoint`.
"""

from kd_train.trainer.checkpoint import (
    CheckpointError,
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from kd_train.trainer.config import ConfigError, RunConfig, load_config, parse_config
from kd_train.trainer.loop import TrainResult, train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "RunConfig",
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
