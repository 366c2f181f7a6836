"""Scenario 2: ``kd-train generate`` SIGKILLed at random points, resumed each time.

One uninterrupted run writes the reference output. A second run, on its own output and
store, is killed with SIGKILL ``kills`` times, each time once the output holds a random
number of records (drawn without replacement, sorted), and rerun after each kill; the last
rerun goes to the end. The loopback teacher answers every request after ``slow_seconds``
so that kills land while requests are in flight.

Verified: the last rerun exits 0; every kill landed before the end; the final output holds
every prompt exactly once and, record by record, equals the uninterrupted run's (the
teacher is greedy, so the answers are deterministic); the ledger's spend equals the sum of
its charges and no response was paid for twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.load.scenarios import ScenarioResult
from tests.load.scenarios.generate_faults import generate_command, output_ids, write_prompts


@dataclass(frozen=True)
class GenerateKillConfig:
    """Size and limits of one run."""

    prompts: int = 200
    kills: int = 5
    concurrency: int = 8
    max_tokens: int = 3
    slow_seconds: float = 0.05
    timeout: float = 5.0
    max_seconds: float = 300.0
    seed: int = 0


FULL = GenerateKillConfig()
QUICK = GenerateKillConfig(prompts=80)


def count_lines(path: Path) -> int:
    """Complete lines in ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))


def records_by_id(path: Path) -> dict[str, bytes]:
    """``id -> line`` of a complete generation output."""
    lines = path.read_bytes().splitlines()
    return dict(zip(output_ids(path), lines, strict=True))


def kill_when(cmd: list[str], out: Path, at: int, deadline: float) -> tuple[int, int]:
    """Start ``cmd``, SIGKILL it once ``out`` holds ``at`` records; return (status, lines)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and count_lines(out) < at and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        status = proc.wait()
    return status, count_lines(out)


def run(config: GenerateKillConfig) -> ScenarioResult:
    """Run the scenario (see the module docstring)."""
    from kd_train.store import open_store
    from kd_train.testing import FaultPlan, LoopbackTeacherServer, save_tiny_llama

    result = ScenarioResult("generate_kill")
    rng = random.Random(config.seed)
    points = sorted(rng.sample(range(1, config.prompts), config.kills))
    with tempfile.TemporaryDirectory(prefix="kd-load-genkill-") as tmp:
        work = Path(tmp)
        model = save_tiny_llama(work / "teacher", seed=3)
        ids = write_prompts(work / "prompts.jsonl", config.prompts)
        plan = FaultPlan(rates={"slow": 1.0})
        deadline = time.monotonic() + config.max_seconds
        with LoopbackTeacherServer(model, faults=plan, slow_seconds=config.slow_seconds) as server:

            def command(name: str) -> list[str]:
                out, store = work / f"{name}.jsonl", f"sqlite:///{work / f'{name}.sqlite'}"
                return generate_command(
                    server.base_url, work / "prompts.jsonl", out, store, 1000.0, config
                )

            reference = subprocess.run(
                command("whole"), capture_output=True, timeout=config.max_seconds, check=False
            )
            result.check("uninterrupted run: exit status", reference.returncode, 0)
            killed_out = work / "killed.jsonl"
            statuses = []
            for at in points:
                code, lines = kill_when(command("killed"), killed_out, at, deadline)
                statuses.append(code)
                result.tried[f"kill at >= {at} records"] = f"killed with {lines} lines written"
            final = subprocess.run(
                command("killed"), capture_output=True, timeout=config.max_seconds, check=False
            )
        result.tried["prompts"] = config.prompts
        result.tried["kills"] = config.kills
        result.check(
            "kills that landed before the run ended",
            sum(s == -signal.SIGKILL for s in statuses),
            config.kills,
        )
        result.check("final rerun: exit status", final.returncode, 0)
        got = records_by_id(killed_out)
        want = records_by_id(work / "whole.jsonl")
        final_ids = output_ids(killed_out)
        result.check("prompts lost", len(set(ids) - set(final_ids)), 0)
        result.check(
            "duplicate records", sum(n - 1 for n in Counter(final_ids).values() if n > 1), 0
        )
        differ = sorted(k for k in want if got.get(k) != want[k])
        result.check("records different from the uninterrupted run", len(differ), 0)
        store = open_store(f"sqlite:///{work / 'killed.sqlite'}")
        try:
            budget = store.ledger.status("default")
            charged = store.ledger.charged_total("default")
            with store.engine.connect() as conn:
                from kd_train.store.schema import charges
                from sqlalchemy import select

                rows = conn.execute(
                    select(charges.c.response_key, charges.c.unconfirmed_reason)
                ).all()
        finally:
            store.close()
        # A killed run's requests in flight may have been billed: the next run reclaims their
        # reservations as unconfirmed charges (at most `concurrency` per kill). Every answer
        # the output holds is paid for once by a confirmed charge.
        keys = [key for key, reason in rows if reason is None]
        reclaimed = len(rows) - len(keys)
        result.check("ledger spend == sum of charges", budget.spent_nanos, charged)
        result.check("responses paid for twice", len(keys) - len(set(keys)), 0)
        result.check(
            "reclaimed charges within kills x concurrency",
            reclaimed <= config.kills * config.concurrency,
            True,
        )
        result.tried["paid responses"] = len(keys)
        result.tried["reclaimed (unconfirmed) charges"] = reclaimed
        result.tried["reservations held by killed runs (nano-USD)"] = budget.reserved_nanos
    return result


if __name__ == "__main__":
    print(run(QUICK).report())
