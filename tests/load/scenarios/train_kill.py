"""Scenario 3: ``kd-train distill`` SIGKILLed while it writes checkpoints, resumed each time.

A tiny student is distilled from a tiny teacher with a checkpoint every step, so the run
spends much of its time writing them. The run is killed with SIGKILL ``kills`` times,
each time while the checkpoint of a random step is being written (its
``checkpoints/.step-*.tmp`` directory exists; steps drawn without replacement), and
``kd-train resume`` is started after each kill; the last resume runs to the end.
Verified after every kill: the latest checkpoint passes
:func:`kd_train.trainer.checkpoint.verify_checkpoint` (every SHA-256 matches) and is the
step before the one being written; the final resume exits 0 at ``max_steps``; every kill
landed inside a checkpoint write.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.load.scenarios import ScenarioResult


@dataclass(frozen=True)
class TrainKillConfig:
    """Size and limits of one run."""

    max_steps: int = 40
    kills: int = 5
    max_seconds: float = 600.0
    seed: int = 0


FULL = TrainKillConfig()
QUICK = TrainKillConfig(max_steps=20, kills=3)


def write_config(work: Path, student: Path, teacher: Path, data: Path, steps: int) -> Path:
    """A distill config that checkpoints every step."""
    cfg = {
        "student": {"path": str(student)},
        "teacher": {"kind": "hf", "path": str(teacher)},
        "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 48},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {
            "max_steps": steps,
            "batch_size": 4,
            "grad_accum": 1,
            "eval_every": 10,
            "checkpoint_every": 1,
            "threads": 1,
            "seed": 5,
        },
        "output_dir": str(work / "run"),
    }
    path = work / "distill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def in_checkpoint_write(run_dir: Path, step: int) -> bool:
    """Whether the checkpoint of ``step`` is being written (its hidden temp dir exists)."""
    root = run_dir / "checkpoints"
    return root.is_dir() and any(
        p.name.startswith(f".step-{step:08d}.") and p.name.endswith(".tmp") for p in root.iterdir()
    )


def kill_during_write(cmd: list[str], run_dir: Path, step: int, deadline: float) -> str:
    """Start ``cmd``; SIGKILL it while it writes the checkpoint of ``step``; say how it went."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if in_checkpoint_write(run_dir, step):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed in a checkpoint write"
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return f"ended before the kill (status {proc.returncode})"


def run(config: TrainKillConfig) -> ScenarioResult:
    """Run the scenario (see the module docstring)."""
    from kd_train.pipelines.toydata import tool_call_records, write_jsonl
    from kd_train.testing import save_tiny_llama
    from kd_train.trainer.checkpoint import latest_checkpoint, verify_checkpoint

    result = ScenarioResult("train_kill")
    rng = random.Random(config.seed)
    kd = shutil.which("kd-train") or "kd-train"
    with tempfile.TemporaryDirectory(prefix="kd-load-trainkill-") as tmp:
        work = Path(tmp)
        student = save_tiny_llama(work / "student", seed=0)
        teacher = save_tiny_llama(work / "teacher", seed=1, hidden_size=64, num_layers=3)
        data = write_jsonl(work / "train.jsonl", tool_call_records(40, seed=3))
        cfg = write_config(work, student, teacher, data, config.max_steps)
        run_dir = work / "run"
        deadline = time.monotonic() + config.max_seconds
        outcomes, intact, steps = [], 0, []
        # The first kill needs a checkpoint before it (distill, not resume, starts a run).
        points = sorted(rng.sample(range(2, config.max_steps), config.kills))
        for i in range(config.kills):
            cmd = [kd, "distill", "--config", str(cfg), "--no-progress"] if i == 0 else [
                kd, "resume", str(run_dir), "--no-progress"]  # fmt: skip
            outcome = kill_during_write(cmd, run_dir, points[i], deadline)
            outcomes.append(outcome)
            latest = latest_checkpoint(run_dir)
            if latest is not None:
                try:
                    verify_checkpoint(latest)
                    intact += 1
                    steps.append(int(latest.name.split("-")[1]))
                except Exception as exc:  # a corrupt checkpoint is the failure we look for
                    result.notes.append(f"kill {i + 1}: {latest.name}: {exc}")
            result.tried[f"kill {i + 1}"] = f"{outcome}; latest checkpoint {latest and latest.name}"
        final = subprocess.run([kd, "resume", str(run_dir), "--no-progress"], capture_output=True,
                               text=True, timeout=config.max_seconds, check=False)  # fmt: skip
        last = latest_checkpoint(run_dir)
        result.tried["kills"] = config.kills
        result.tried["max steps"] = config.max_steps
        result.check("kills that landed inside a checkpoint write",
                     outcomes.count("killed in a checkpoint write"), config.kills)  # fmt: skip
        result.check("intact latest checkpoint after each kill", intact, config.kills)
        result.check("latest intact checkpoint at each kill = the step before it", steps,
                     [p - 1 for p in points])  # fmt: skip
        result.check("final resume: exit status", final.returncode, 0)
        result.check("final step", last and int(last.name.split("-")[1]), config.max_steps)
        if final.returncode != 0:
            result.notes.append(final.stderr[-600:])
    return result


if __name__ == "__main__":
    print(run(QUICK).report())
