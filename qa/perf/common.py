"""Shared pieces of the perf tools: the results folder, the machine id, JSON reading.

The machine id names ``qa/perf/results/<machine-id>.json``. It is stable on one class of
machine and identifies no person or host: the first 12 hex digits of the SHA-256 of
``system | machine architecture | CPU model | logical cores | total memory (GiB, rounded)``.
The host name, user and network addresses are never part of it.

>>> from qa.perf.common import machine_id
>>> mid = machine_id({"system": "Linux", "arch": "x86_64", "cpu": "X", "cores": 2, "mem_gib": 24})
>>> len(mid), mid == machine_id({"system": "Linux", "arch": "x86_64", "cpu": "X", "cores": 2,
...                             "mem_gib": 24})
(15, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PERF = ROOT / "qa" / "perf"
RESULTS = PERF / "results"
#: Where a routine run (no ``--record``) writes: git-ignored.
SCRATCH = ROOT / "qa" / "reports" / "perf"
#: Where the docs pick up the committed charts.
DOCS_CHARTS = ROOT / "docs" / "_static" / "perf"


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def total_memory_gib() -> int:
    """Total physical memory in GiB, rounded (0 when the platform does not say)."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
    return round(pages / 2**30)


def machine_facts() -> dict[str, Any]:
    """The non-identifying facts the machine id is made of."""
    return {
        "system": platform.system(),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "mem_gib": total_memory_gib(),
    }


def machine_id(facts: dict[str, Any] | None = None) -> str:
    """``<cores>c-<12 hex digits>``: a stable, non-identifying name of this class of machine."""
    facts = facts if facts is not None else machine_facts()
    text = "|".join(str(facts[k]) for k in ("system", "arch", "cpu", "cores", "mem_gib"))
    return f"{facts['cores']}c-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))
