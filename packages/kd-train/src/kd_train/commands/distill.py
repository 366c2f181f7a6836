"""``kd-train distill --config run.yaml``: train a student from a run config.

Under ``torchrun --nproc_per_node N`` the same command runs data-parallel (DDP).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kd_train.trainer import RunConfig


def register(subparsers: Any) -> None:
    """Add the ``distill`` subcommand."""
    parser = subparsers.add_parser(
        "distill", help="distil a student from a YAML/TOML run config (torchrun-ready)"
    )
    parser.add_argument("--config", type=Path, required=True, help="run config (.yaml/.toml)")
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="override the config's output_dir"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the config, train, print where the student was written."""
    from kd_train.trainer import load_config

    config = load_config(args.config)
    if args.output_dir is not None:
        config = config.model_copy(update={"output_dir": str(args.output_dir.resolve())})
    return train_and_report(config, resume=False, progress=not args.no_progress)


def train_and_report(
    config: RunConfig, *, resume: bool, progress: bool, allow_change: tuple[str, ...] = ()
) -> int:
    """Train (or resume) on this process's rank; rank 0 prints where the student went.

    ``allow_change`` names the config and fingerprint keys a resume accepts as changed.
    """
    from kd_train.trainer import train
    from kd_train.trainer.distributed import from_environ

    ctx = from_environ(os.environ)
    result = train(
        config,
        ctx,
        resume=resume,
        progress=progress,
        environ=os.environ,
        allow_change=allow_change,
    )
    if ctx.is_main:
        print(
            json.dumps(
                {
                    "run_dir": str(result.run_dir),
                    "student": str(result.student_dir),
                    "step": result.state.step,
                }
            )
        )
    return 0
