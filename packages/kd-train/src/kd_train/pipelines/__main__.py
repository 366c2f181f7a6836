"""``python -m kd_train.pipelines {all,toy,8-ball,smollm2} --out DIR``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kd_train.cliutil import library_progress
from kd_train.pipelines.common import write_summary

PIPELINES = ("all", "toy", "8-ball", "smollm2")


def run(name: str, out: Path, *, steps: int | None, progress: bool) -> dict[str, Any]:
    """Run pipeline ``name`` into ``out``; return its figures (``all``: keyed by pipeline)."""
    from kd_train.pipelines.eightball import run_eight_ball
    from kd_train.pipelines.toy import run_toy

    kwargs: dict[str, Any] = {"progress": progress}
    if steps is not None:
        kwargs["steps"] = steps
    if name == "toy":
        return run_toy(out, **kwargs)
    if name == "8-ball":
        return run_eight_ball(out, **kwargs)
    if name == "smollm2":
        from kd_train.pipelines.smollm2 import run_smollm2

        return run_smollm2(out, **kwargs)
    return {"toy": run_toy(out, **kwargs), "8-ball": run_eight_ball(out, **kwargs)}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints each stage's figures and writes ``summary.json``."""
    parser = argparse.ArgumentParser(prog="python -m kd_train.pipelines")
    parser.add_argument("pipeline", choices=PIPELINES)
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline"))
    parser.add_argument("--steps", type=int, default=None, help="training steps per stage")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with library_progress(not args.no_progress):
        figures = run(args.pipeline, args.out, steps=args.steps, progress=not args.no_progress)
    figures = {**figures, "seconds": time.perf_counter() - start}
    args.out.mkdir(parents=True, exist_ok=True)
    write_summary(args.out / "summary.json", figures)
    print(f"== done in {figures['seconds']:.1f} s; figures in {args.out / 'summary.json'}")
    print(json.dumps({"summary": str(args.out / "summary.json")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
