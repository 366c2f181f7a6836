"""``metrics.jsonl`` (one JSON object per optimiser step) and the progress bar.

A row holds ``step``, ``epoch``, every loss term (``loss``, ``kd``, ``ce``, ...), ``lr``,
``grad_norm``, ``tokens``, ``tokens_per_s``, ``elapsed_s`` and ``peak_memory_mb``; a step
that ran an evaluation also carries ``eval_<term>`` keys. Rows are appended and flushed
as they come (a killed run keeps every row it finished); on resume, rows after the
checkpoint's step and a half-written last line are dropped (the file is rewritten
atomically) so the file again reads as one uninterrupted run.

>>> import tempfile, pathlib
>>> from kd_train.trainer.metrics import MetricsLog, read_metrics
>>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
>>> with MetricsLog(path) as log:
...     log.write({"step": 1, "loss": 2.5})
...     log.write({"step": 2, "loss": 2.0})
>>> with MetricsLog(path, keep_through_step=1) as log:
...     pass
>>> [row["step"] for row in read_metrics(path)]
[1]
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import torch

from kd_train.atomic import atomic_write_text
from kd_train.cliutil import progress_bar as make_bar


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Return the complete rows of a ``metrics.jsonl`` (a torn last line is skipped)."""
    rows: list[dict[str, Any]] = []
    file = Path(path)
    if not file.exists():
        return rows
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """Appends metric rows to a JSONL file; a no-op when ``enabled`` is false (rank != 0).

    Args:
        path: the ``metrics.jsonl`` file.
        keep_through_step: on open, keep only rows with ``step <= keep_through_step``
            (``None``: start a new file).
        enabled: write nothing when false.
    """

    def __init__(
        self, path: str | Path, keep_through_step: int | None = None, enabled: bool = True
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._handle: IO[str] | None = None
        if not enabled:
            return
        kept = []
        if keep_through_step is not None:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_through_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the OS."""
        if self._handle is not None:
            self._handle.write(json.dumps(row) + "\n")
            self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA allocator peak, or peak RSS on the CPU."""
    if device.type == "cuda":  # pragma: no cover - CPU-only CI
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar over optimiser steps (ETA included), on standard error."""
    return make_bar(
        total=total,
        initial=initial,
        enabled=enabled,
        desc="distill",
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
    )


def postfix(row: dict[str, Any], terms: list[str], *, timed: bool = False) -> dict[str, str]:
    """The progress bar's postfix: the loss terms and tokens/s of a metrics row.

    ``timed`` (an on-policy run) adds the step's time split (generate / teacher / train, in
    seconds) and the mean sampled length.
    """
    out = {t: f"{row[t]:.4f}" for t in terms}
    out["tok/s"] = f"{row['tokens_per_s']:.0f}"
    if timed:
        out["gen/teach/train s"] = (
            f"{row['generate_s']:.2f}/{row['teacher_s']:.2f}/{row['train_s']:.2f}"
        )
        out["len"] = f"{row['gen_len_mean']:.1f}"
    return out
