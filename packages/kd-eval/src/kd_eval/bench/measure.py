"""Measure greedy generation: latency percentiles, TTFT, prefill/decode tokens/s, memory.

One *request* is: prefill a random prompt ``[B, S]`` (token ids drawn from a seeded
generator), then ``new_tokens - 1`` decode steps. For each ``(S, B)``, ``warmup`` requests
are run and discarded, then ``repeats`` are timed with ``time.perf_counter``:

* latency = whole request; TTFT = prefill including the choice of the first token;
* prefill tokens/s ``= B·S / median(TTFT)``;
  decode tokens/s ``= B·(new_tokens-1) / median(latency - TTFT)``.

Memory is the peak resident set size read with ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
in this process: ``peak_rss_mb`` is the process's high-water mark after the configuration
ran, ``peak_rss_delta_mb`` its growth over the mark taken before the model was opened
(``0`` when everything fitted under an earlier peak, which is why a fresh process per model
gives the cleanest figure).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kd_train.cliutil import progress_bar

from kd_eval.bench.runners import Runner, open_runner
from kd_eval.errors import BenchError
from kd_eval.stats.percentiles import MIN_SAMPLES_FOR_P99, summarize

#: How memory is measured (recorded in every result).
MEMORY_METHOD = (
    "resource.getrusage(RUSAGE_SELF).ru_maxrss in the benchmarking process; "
    "delta = growth of the peak over the peak before the model was opened"
)


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MiB (Linux: KiB units; macOS: bytes)."""
    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return raw / (1024 * 1024) if sys.platform == "darwin" else raw / 1024


@dataclass(frozen=True)
class BenchSettings:
    """What to measure: shapes, how many requests, how many generated tokens."""

    seq_lens: Sequence[int] = (32, 128)
    batch_sizes: Sequence[int] = (1,)
    new_tokens: int = 8
    warmup: int = 5
    repeats: int = MIN_SAMPLES_FOR_P99
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`~kd_eval.errors.BenchError` on settings that cannot measure anything."""
        if not self.seq_lens or not self.batch_sizes:
            raise BenchError("give at least one sequence length and one batch size")
        if min(self.seq_lens) < 1 or min(self.batch_sizes) < 1:
            raise BenchError("sequence lengths and batch sizes must be >= 1")
        if self.new_tokens < 1 or self.repeats < 1 or self.warmup < 0:
            raise BenchError("need new_tokens >= 1, repeats >= 1 and warmup >= 0")


@dataclass
class BenchResult:
    """Measurements of one model over every ``(seq_len, batch_size)`` configuration."""

    model: str
    kind: str
    parameters: int | None
    settings: BenchSettings
    configs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the ``bench`` section of a report; also a baseline file)."""
        s = self.settings
        return {
            "model": self.model,
            "kind": self.kind,
            "parameters": self.parameters,
            "settings": {
                "seq_lens": list(s.seq_lens),
                "batch_sizes": list(s.batch_sizes),
                "new_tokens": s.new_tokens,
                "warmup": s.warmup,
                "repeats": s.repeats,
                "seed": s.seed,
            },
            "memory_method": MEMORY_METHOD,
            "configs": self.configs,
        }


def time_request(runner: Runner, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """Run one request; return ``(latency_ms, ttft_ms)``."""
    start = time.perf_counter()
    token, state = runner.prefill(ids)
    first = time.perf_counter()
    for _ in range(new_tokens - 1):
        token, state = runner.decode(token, state)
    end = time.perf_counter()
    return (end - start) * 1e3, (first - start) * 1e3


def config_figures(
    seq_len: int, batch_size: int, new_tokens: int, latencies: list[float], ttfts: list[float]
) -> dict[str, Any]:
    """Turn timings (ms) of one configuration into its summary (without memory).

    >>> from kd_eval.bench.measure import config_figures
    >>> f = config_figures(10, 2, 3, [30.0, 40.0, 50.0], [10.0, 10.0, 10.0])
    >>> f["prefill_tokens_per_s"], f["decode_tokens_per_s"]
    (2000.0, 133.33333333333334)
    """
    decode_ms = statistics.median(lat - t for lat, t in zip(latencies, ttfts, strict=True))
    ttft_ms = statistics.median(ttfts)
    decode_tokens = batch_size * (new_tokens - 1)
    return {
        "seq_len": seq_len,
        "batch_size": batch_size,
        "latency_ms": summarize(latencies).to_dict(),
        "ttft_ms": summarize(ttfts).to_dict(),
        "prefill_tokens_per_s": batch_size * seq_len / (ttft_ms / 1e3) if ttft_ms > 0 else None,
        "decode_tokens_per_s": (
            decode_tokens / (decode_ms / 1e3) if decode_tokens and decode_ms > 0 else None
        ),
    }


def bench_runner(
    runner: Runner,
    settings: BenchSettings,
    *,
    model: str = "",
    rss_before_mb: float | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Benchmark an opened runner over every configuration of ``settings``."""
    settings.check()
    before = peak_rss_mb() if rss_before_mb is None else rss_before_mb
    result = BenchResult(model, runner.kind, runner.parameters, settings)
    gen = torch.Generator().manual_seed(settings.seed)
    shapes = [(s, b) for s in settings.seq_lens for b in settings.batch_sizes]
    for seq_len, batch in shapes:  # refuse a configuration before any is measured
        runner.check_request(batch, seq_len, settings.new_tokens)
    if log is not None:
        note = "" if settings.repeats >= MIN_SAMPLES_FOR_P99 else " (too few for a stable p99)"
        log(
            f"{len(shapes)} configurations x ({settings.warmup} warm-up + "
            f"{settings.repeats} timed requests){note}, {settings.new_tokens} new tokens each"
        )
    for seq_len, batch in shapes:
        ids = torch.randint(4, max(runner.vocab_size, 5), (batch, seq_len), generator=gen)
        for _ in range(settings.warmup):
            time_request(runner, ids, settings.new_tokens)
        latencies, ttfts = [], []
        label = f"S={seq_len} B={batch}"
        for _ in progress_bar(range(settings.repeats), desc=label, enabled=progress, leave=False):
            lat, ttft = time_request(runner, ids, settings.new_tokens)
            latencies.append(lat)
            ttfts.append(ttft)
        figures = config_figures(seq_len, batch, settings.new_tokens, latencies, ttfts)
        peak = peak_rss_mb()
        figures["peak_rss_mb"] = peak
        figures["peak_rss_delta_mb"] = max(0.0, peak - before)
        result.configs.append(figures)
    return result


def bench_model(
    path: str | Path,
    settings: BenchSettings,
    *,
    trust_artifact: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Open the model at ``path`` and benchmark it (see :func:`~kd_eval.bench.runners.open_runner`).

    ``trust_artifact`` lets a TorchScript or ``torch.export`` file load (it is unpickled).
    """
    before = peak_rss_mb()
    runner = open_runner(path, trust_artifact=trust_artifact)
    return bench_runner(
        runner, settings, model=str(path), rss_before_mb=before, progress=progress, log=log
    )
