"""``kd-train resume RUN_DIR [--allow-change KEY ...]``: continue a run from its latest checkpoint.

The run's own config (stored in ``RUN_DIR/config.json`` when it started) is used, so the
continued run reproduces the uninterrupted one. Its ``output_dir`` is ``RUN_DIR`` itself: a
run directory that was moved or copied resumes where it is, never into the directory it
was first written to.

The latest checkpoint is verified first; one that fails stops the command with its name and
the newest checkpoint that verifies (nothing falls back silently). ``config.json`` (as it is
now, edits included) and the fingerprints of the datasets, tokenizer and teacher are then
compared with the checkpoint's: every difference is refused, naming the key
(``train.batch_size: 8 -> 4``), unless ``--allow-change KEY`` names it (once per key; a key
accepts the keys under it, e.g. ``--allow-change train.max_steps`` to train longer). Accepted
changes are recorded in the run's state and in ``run_manifest.json`` (``allowed_changes``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kd_train.errors import KDTrainError


def register(subparsers: Any) -> None:
    """Add the ``resume`` subcommand."""
    parser = subparsers.add_parser("resume", help="continue a run from its latest checkpoint")
    parser.add_argument("run_dir", type=Path, help="the output_dir of the run")
    parser.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="KEY",
        help="accept a change of KEY since the checkpoint (e.g. train.max_steps, "
        "fingerprint.data.train); repeat for each key",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load ``RUN_DIR/config.json`` and continue training from the latest checkpoint."""
    from kd_train.commands.distill import train_and_report
    from kd_train.trainer import parse_config

    config_file = args.run_dir / "config.json"
    try:
        data = json.loads(config_file.read_bytes().decode("utf-8"))
    except FileNotFoundError as exc:
        raise KDTrainError(
            f"{config_file} not found: {args.run_dir} is not a kd-train run directory"
        ) from exc
    except ValueError as exc:  # not JSON, or not UTF-8
        raise KDTrainError(f"{config_file} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise KDTrainError(f"{config_file} cannot be read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise KDTrainError(f"{config_file} must hold a JSON object (the run's config)")
    config = parse_config({**data, "output_dir": str(args.run_dir.resolve())}, str(config_file))
    allow = tuple(args.allow_change)
    return train_and_report(config, resume=True, progress=not args.no_progress, allow_change=allow)
