"""Compare a bench result with a stored baseline, as ratios with a tolerance.

For each configuration present in both and each metric of :data:`COMPARED`,
``ratio = current / baseline``. A lower-is-better metric (latencies) regresses when
``ratio > 1 + tolerance``; a higher-is-better one (tokens/s) when
``ratio < 1 / (1 + tolerance)``, so the tolerance means the same slowdown either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kd_eval.errors import ConfigError

#: metric name -> (path in a config's figures, True if higher is better).
COMPARED: dict[str, tuple[tuple[str, ...], bool]] = {
    "latency_p50_ms": (("latency_ms", "p50"), False),
    "latency_p95_ms": (("latency_ms", "p95"), False),
    "latency_p99_ms": (("latency_ms", "p99"), False),
    "ttft_p50_ms": (("ttft_ms", "p50"), False),
    "prefill_tokens_per_s": (("prefill_tokens_per_s",), True),
    "decode_tokens_per_s": (("decode_tokens_per_s",), True),
}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read a baseline (a bench result in JSON, as ``kd-eval bench --save-baseline`` writes).

    Raises:
        ConfigError: the file is missing, not JSON, or has no ``configs`` list.
    """
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"baseline {source} does not exist; create one with --save-baseline"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"baseline {source}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list):
        raise ConfigError(f"baseline {source}: expected a bench result with a 'configs' list")
    return data


def _get(figures: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = figures
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) else None


def compare_to_baseline(
    current: dict[str, Any], baseline: dict[str, Any], tolerance: float
) -> list[dict[str, Any]]:
    """Return one row per (configuration, metric) with the ratio and whether it regressed.

    >>> from kd_eval.bench.baseline import compare_to_baseline
    >>> cfg = lambda p50: {"seq_len": 8, "batch_size": 1, "latency_ms": {"p50": p50}}
    >>> rows = compare_to_baseline({"configs": [cfg(12.0)]}, {"configs": [cfg(10.0)]}, 0.1)
    >>> rows[0]["ratio"], rows[0]["regressed"]
    (1.2, True)
    """
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")
    base = {(c["seq_len"], c["batch_size"]): c for c in baseline["configs"]}
    rows = []
    for config in current["configs"]:
        ref = base.get((config["seq_len"], config["batch_size"]))
        if ref is None:
            continue
        for metric, (path, higher_better) in COMPARED.items():
            now, then = _get(config, path), _get(ref, path)
            if now is None or then is None or then <= 0:
                continue
            ratio = now / then
            regressed = ratio < 1 / (1 + tolerance) if higher_better else ratio > 1 + tolerance
            rows.append(
                {
                    "seq_len": config["seq_len"],
                    "batch_size": config["batch_size"],
                    "metric": metric,
                    "baseline": then,
                    "current": now,
                    "ratio": ratio,
                    "tolerance": tolerance,
                    "regressed": regressed,
                }
            )
    return rows
