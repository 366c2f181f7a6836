"""Scenario 4: two ``kd-train generate`` workers sharing one PostgreSQL budget.

Two processes answer two disjoint prompt files against the same loopback teacher, with
the same ``--store`` (a PostgreSQL database) and ``--budget-name``, so they reserve and
settle against one budget row. The cap covers about half of all prompts, so both race to
the end of it. Verified: both workers were admitted some requests (or, where one started
only after the other had reserved the whole cap, it was stopped by that budget at once) and
stopped at the budget (exit status 3) or finished (0); the combined spend never exceeds the cap; the
spend equals the sum of the charges of both owners; no reservation is left open; no
output has a duplicate.

``store_url``: the database to use; ``None`` starts a private server
(:mod:`tests.load.scenarios.postgres`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.load.scenarios import ScenarioResult
from tests.load.scenarios.generate_faults import (
    generate_command,
    output_ids,
    worst_case_usd,
    write_prompts,
)


@dataclass(frozen=True)
class SharedBudgetConfig:
    """Size and limits of one run."""

    prompts_per_worker: int = 150
    concurrency: int = 8
    max_tokens: int = 3
    timeout: float = 5.0
    max_seconds: float = 300.0
    store_url: str | None = None


FULL = SharedBudgetConfig()
QUICK = SharedBudgetConfig(prompts_per_worker=60)


@contextlib.contextmanager
def _store(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from tests.load.scenarios.postgres import private_postgres

    with private_postgres() as fresh:
        yield fresh


def run(config: SharedBudgetConfig) -> ScenarioResult:
    """Run the scenario (see the module docstring)."""
    from kd_train.store import open_store, usd_to_nanos
    from kd_train.store.schema import charges
    from kd_train.testing import LoopbackTeacherServer, save_tiny_llama
    from sqlalchemy import func, select

    result = ScenarioResult("shared_budget")
    n = config.prompts_per_worker
    with (
        tempfile.TemporaryDirectory(prefix="kd-load-shared-") as tmp,
        _store(config.store_url) as store_url,
    ):
        work = Path(tmp)
        model = save_tiny_llama(work / "teacher", seed=3)
        files = []
        for w in range(2):
            path = work / f"prompts-{w}.jsonl"
            write_prompts(path, 2 * n)
            rows = path.read_text().splitlines()[w * n : (w + 1) * n]  # disjoint halves
            path.write_text("\n".join(rows) + "\n")
            files.append(path)
        prompts = [json.loads(r)["prompt"] for f in files for r in f.read_text().splitlines()]
        cap = sum(worst_case_usd(p, config.max_tokens) for p in prompts) / 5
        with LoopbackTeacherServer(model) as server:
            procs = []
            for w, prompt_file in enumerate(files):
                cmd = generate_command(
                    server.base_url, prompt_file, work / f"out-{w}.jsonl", store_url, cap, config
                )
                cmd += ["--budget-name", "shared"]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))  # fmt: skip
            statuses = []
            for proc in procs:
                proc.communicate(timeout=config.max_seconds)
                statuses.append(proc.returncode)
        store = open_store(store_url)
        try:
            status = store.ledger.status("shared")
            query = select(charges.c.owner, func.sum(charges.c.cost_nanos)).group_by(
                charges.c.owner
            )
            with store.engine.connect() as conn:
                by_owner = {str(o): int(s) for o, s in conn.execute(query).all()}
        finally:
            store.close()
        written = [len(output_ids(work / f"out-{w}.jsonl")) for w in range(2)]
        result.tried["workers"] = 2
        result.tried["prompts per worker"] = n
        result.tried["cap USD"] = round(cap, 6)
        result.tried["records written per worker"] = written
        result.tried["charging owners"] = len(by_owner)
        result.check("exit statuses (3 = budget stop, 0 = done)", statuses, "each in {0, 3}",
                     ok=all(s in (0, 3) for s in statuses))  # fmt: skip
        result.check("workers stopped by the budget", statuses.count(3), ">= 1",
                     ok=statuses.count(3) >= 1)  # fmt: skip
        # Both workers were admitted requests, unless one started only after the other had
        # reserved the whole cap (a loaded machine starts processes seconds apart): then it
        # must have been stopped by that same budget at once, which a budget of its own
        # (the defect this scenario guards against) would not have done.
        unpaid = [w for w in range(2) if written[w] == 0]
        result.check("workers paid for some requests", len(by_owner), ">= 1",
                     ok=len(by_owner) >= 1 and len(by_owner) + len(unpaid) == 2)  # fmt: skip
        result.check("workers never paid were stopped by the shared budget",
                     [statuses[w] for w in unpaid], "each 3",
                     ok=all(statuses[w] == 3 for w in unpaid))  # fmt: skip
        if unpaid:
            result.notes.append(f"worker {unpaid[0]} started after the cap was reserved")
        cap_nanos = usd_to_nanos(cap)
        result.check("combined spend <= cap (nano-USD)", status.spent_nanos,
                     f"<= {cap_nanos}", ok=status.spent_nanos <= cap_nanos)  # fmt: skip
        result.check("spend == sum of both workers' charges", status.spent_nanos,
                     sum(by_owner.values()))  # fmt: skip
        result.check("reservations left open", status.reserved_nanos, 0)
        for w in range(2):
            ids = output_ids(work / f"out-{w}.jsonl")
            result.check(f"worker {w}: duplicate records",
                         sum(c - 1 for c in Counter(ids).values() if c > 1), 0)  # fmt: skip
        result.figures["spend_share_of_cap"] = status.spent_nanos / max(1, usd_to_nanos(cap))
    return result


if __name__ == "__main__":
    print(run(QUICK).report())
