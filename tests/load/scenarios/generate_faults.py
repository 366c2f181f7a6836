"""Scenario 1: ``kd-train generate`` at high concurrency against a teacher that injects faults.

The loopback teacher (:class:`kd_train.testing.LoopbackTeacherServer`, a tiny real
model) fails its first five requests with one fault each, then ``fault_rate`` of its
requests at random, spread evenly over 429 with ``Retry-After``,
500, stalls longer than the client timeout, dropped connections and malformed JSON. The
command line runs in a child process, in two phases on one store:

1. **capped**: a budget that covers about half the prompts: the run must stop with exit
   status 3, having spent no more than the cap;
2. **complete**: the same command with a budget raised to cover everything: it must finish
   (exit 0) every prompt.

Verified: every prompt is in the output exactly once (0 lost, 0 duplicates), every line is
a valid KD record for its prompt, the ledger's spend equals the sum of its charges and
never exceeds the cap, no reservation is left open, and each fault kind was injected.
Reported: prompts/s of the complete phase, retries, what the server answered.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_train.testing import generate_argv

from tests.load.scenarios import ScenarioResult

#: The faults injected, in equal shares of ``fault_rate``.
FAULT_KINDS = ("429", "500", "stall", "drop", "malformed")
#: Prices (USD per 1000 tokens) charged by the scenario's endpoint.
PRICE_PROMPT, PRICE_COMPLETION = 0.5, 1.5


@dataclass(frozen=True)
class GenerateFaultsConfig:
    """Size and limits of one run."""

    prompts: int = 600
    concurrency: int = 64
    fault_rate: float = 0.10
    max_tokens: int = 3
    timeout: float = 1.0
    stall_seconds: float = 1.5
    max_seconds: float = 600.0
    seed: int = 0


FULL = GenerateFaultsConfig()
QUICK = GenerateFaultsConfig(prompts=150, concurrency=32)


def write_prompts(path: Path, n: int) -> list[str]:
    """Write ``n`` distinct prompts as JSONL; return their ids."""
    words = ["fox", "dog", "tool", "city", "Paris", "unit", "call", "weather"]
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            text = f"{words[i % 8]} {words[(i // 8) % 8]} number {i}:"
            out.write(json.dumps({"id": f"p{i:05d}", "prompt": text}) + "\n")
    return [f"p{i:05d}" for i in range(n)]


def generate_command(
    base_url: str, prompts: Path, out: Path, store: str, budget: float, config: Any
) -> list[str]:
    """The ``kd-train generate`` command line of the scenarios."""
    argv = generate_argv(
        base_url, prompts, out, store=store, max_tokens=config.max_tokens,
        concurrency=config.concurrency, timeout=config.timeout,
        price_per_1k_prompt=PRICE_PROMPT, price_per_1k_completion=PRICE_COMPLETION,
        budget=f"{budget:.6f}", max_attempts=8, retry_base_delay=0.05,
    )  # fmt: skip
    # the second phase raises the cap of the first: a shared cap changes only when asked
    return [sys.executable, "-m", "kd_train.cli", *argv, "--change-budget"]


def worst_case_usd(prompt: str, max_tokens: int) -> float:
    """The reservation ``HTTPTeacher`` makes for ``prompt`` (its UTF-8 bytes + 16 tokens)."""
    return ((len(prompt.encode()) + 16) * PRICE_PROMPT + max_tokens * PRICE_COMPLETION) / 1000


def output_ids(path: Path) -> list[str]:
    """The ids of the records in a generation output, in file order (every line parsed)."""
    from kd_train.data.validate import parse_line

    ids = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            ids.append(parse_line(raw.rstrip(b"\n"), str(path), number).id)
    return ids


def check_ledger(result: ScenarioResult, store_url: str, label: str, cap_usd: float) -> float:
    """Check the ledger invariants of the ``default`` budget; return the spend in USD."""
    from kd_train.store import nanos_to_usd, open_store, usd_to_nanos

    store = open_store(store_url)
    try:
        status = store.ledger.status("default")
        charged = store.ledger.charged_total("default")
    finally:
        store.close()
    spent = nanos_to_usd(status.spent_nanos)
    cap = usd_to_nanos(cap_usd)
    result.check(f"{label}: ledger spend == sum of charges", status.spent_nanos, charged)
    result.check(
        f"{label}: spend <= cap (USD)",
        round(spent, 6),
        f"<= {cap_usd:.6f}",
        ok=status.spent_nanos <= cap,
    )
    result.check(f"{label}: reservations left open", status.reserved_nanos, 0)
    return spent


def run(config: GenerateFaultsConfig) -> ScenarioResult:
    """Run the scenario (see the module docstring)."""
    from kd_train.testing import FaultPlan, LoopbackTeacherServer, save_tiny_llama

    result = ScenarioResult("generate_faults")
    share = config.fault_rate / len(FAULT_KINDS)
    with tempfile.TemporaryDirectory(prefix="kd-load-generate-") as tmp:
        work = Path(tmp)
        model = save_tiny_llama(work / "teacher", seed=3)
        ids = write_prompts(work / "prompts.jsonl", config.prompts)
        prompts = [json.loads(line)["prompt"] for line in (work / "prompts.jsonl").open()]
        out, store = work / "out.jsonl", f"sqlite:///{work / 'store.sqlite'}"
        # Actual costs are ~40% of the worst case the ledger reserves (prompt bytes count as
        # tokens): a fifth of the worst case covers about half the prompts.
        worst = sum(worst_case_usd(p, config.max_tokens) for p in prompts)
        half_cap, full_cap = worst / 5, 2 * worst
        # Each kind once up front (so a small run sees them all), then drawn at random.
        plan = FaultPlan(
            script=list(FAULT_KINDS), rates=dict.fromkeys(FAULT_KINDS, share), seed=config.seed
        )
        with LoopbackTeacherServer(
            model, faults=plan, retry_after=0.05, stall_seconds=config.stall_seconds
        ) as server:
            phases = {}
            for label, cap in (("capped", half_cap), ("complete", full_cap)):
                cmd = generate_command(server.base_url, work / "prompts.jsonl", out, store, cap,
                                       config)  # fmt: skip
                began = time.monotonic()
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=config.max_seconds, check=False
                )
                seconds = time.monotonic() - began
                written = len(output_ids(out)) if out.exists() else 0
                phases[label] = (proc, seconds, written)
                result.tried[f"{label}: budget USD"] = round(cap, 6)
                result.tried[f"{label}: records in output after"] = written
                check_ledger(result, store, label, cap)
            counts = Counter(server.counts)
        capped, complete = phases["capped"], phases["complete"]
        result.tried["prompts"] = config.prompts
        result.tried["concurrency"] = config.concurrency
        result.tried["requests served"] = sum(counts.values())
        for kind in ("ok", *FAULT_KINDS):
            result.tried[f"requests answered {kind}"] = counts.get(kind, 0)
        result.check("capped: exit status (3 = stopped at the budget)", capped[0].returncode, 3)
        result.check(
            "capped: stopped before the end",
            capped[2],
            f"< {config.prompts}",
            ok=0 < capped[2] < config.prompts,
        )
        result.check("complete: exit status", complete[0].returncode, 0)
        final = output_ids(out)
        dupes = sum(n - 1 for n in Counter(final).values() if n > 1)
        result.check("prompts lost", len(set(ids) - set(final)), 0)
        result.check("duplicate records", dupes, 0)
        result.check("records not from the prompts", len(set(final) - set(ids)), 0)
        injected = sum(counts.get(k, 0) for k in FAULT_KINDS)
        result.check(
            "every fault kind injected",
            sorted(k for k in FAULT_KINDS if counts.get(k, 0) > 0),
            sorted(FAULT_KINDS),
        )
        result.figures["fault_share"] = injected / max(1, sum(counts.values()))
        result.figures["complete_prompts_per_s"] = (complete[2] - capped[2]) / complete[1]
        result.figures["capped_prompts_per_s"] = capped[2] / capped[1]
        if complete[0].returncode != 0:
            result.notes.append(f"complete phase stderr: {complete[0].stderr[-600:]}")
    return result


if __name__ == "__main__":
    print(run(QUICK).report())
