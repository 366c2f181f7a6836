"""``python -m kd_train.testing.server MODEL_DIR``: serve a model on loopback until interrupted.

For demos and load runs; ``--fault NAME=RATE`` (repeatable) injects faults at random.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from pathlib import Path

from kd_train.testing.server.faults import FaultPlan
from kd_train.testing.server.loopback import LoopbackTeacherServer


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a model directory on loopback until interrupted (for demos and load runs)."""
    parser = argparse.ArgumentParser(prog="python -m kd_train.testing.server")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=RATE")
    parser.add_argument("--retry-after", type=float, default=0.0)
    args = parser.parse_args(argv)
    rates = {name: float(rate) for name, rate in (f.split("=", 1) for f in args.fault)}
    with LoopbackTeacherServer(
        args.model_dir, faults=FaultPlan(rates=rates), retry_after=args.retry_after
    ) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()
    return 0  # pragma: no cover - only reached through KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
