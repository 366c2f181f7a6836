"""Compare a bench result with a stored baseline, as ratios with a tolerance.

For each configuration present in both and each metric of :data:`COMPARED`,
``ratio = current / baseline``. A lower-is-better metric (latencies) regresses when
``ratio > 1 + tolerance``; a higher-is-better one (tokens/s) when
``ratio < 1 / (1 + tolerance)``, so the tolerance means the same slowdown either way.
A figure that is missing or not a finite number has a defined outcome, listed in
:func:`compare_to_baseline`.
"""

from __future__ import annotations

import json
import math
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
        ConfigError: the file is missing, not JSON, has no ``configs`` list, a configuration
            without integer ``seq_len`` and ``batch_size``, or a compared figure that is not
            a finite number above 0 (``NaN``, ``Infinity``, 0, a string).
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
    if not isinstance(data, dict):
        raise ConfigError(f"baseline {source}: expected a bench result with a 'configs' list")
    for (seq_len, batch), config in _by_shape(data, f"baseline {source}").items():
        for metric, (figure_path, _higher) in COMPARED.items():
            value = _figure(config, figure_path)
            if isinstance(value, str) or (value is not None and value <= 0):
                problem = value if isinstance(value, str) else f"{value:g} is not above 0"
                raise ConfigError(
                    f"baseline {source}: S={seq_len} B={batch} {metric}: {problem}; a "
                    "baseline figure must be a finite number above 0: re-save the baseline "
                    "with --save-baseline"
                )
    return data


def _figure(figures: dict[str, Any], path: tuple[str, ...]) -> float | str | None:
    """The figure at ``path``: a finite number, ``None`` when absent, or why it is unusable."""
    value: Any = figures
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    return float(value)


def _by_shape(result: dict[str, Any], what: str) -> dict[tuple[int, int], dict[str, Any]]:
    """The configurations of a bench result by ``(seq_len, batch_size)``."""
    configs = result.get("configs")
    if not isinstance(configs, list):
        raise ConfigError(f"{what}: expected a bench result with a 'configs' list")
    shapes: dict[tuple[int, int], dict[str, Any]] = {}
    for i, config in enumerate(configs):
        is_dict = isinstance(config, dict)
        seq_len = config.get("seq_len") if is_dict else None
        batch = config.get("batch_size") if is_dict else None
        if type(seq_len) is not int or type(batch) is not int:
            raise ConfigError(f"{what}: configs[{i}] has no integer seq_len and batch_size")
        shapes[(seq_len, batch)] = config
    return shapes


def compare_to_baseline(
    current: dict[str, Any], baseline: dict[str, Any], tolerance: float
) -> list[dict[str, Any]]:
    """Return one row per (configuration, metric) with the ratio and whether it regressed.

    Configurations in only one of the two are not compared. For a configuration in both,
    each metric of :data:`COMPARED` gives, by what the two hold:

    * both a number: ``ratio = current / baseline`` and the verdict of the module docstring;
    * neither (not measured either time, e.g. no decode figures with 0 new tokens): no row;
    * only the current: a row with ``ratio`` ``None``, not regressed, ``problem`` "no
      baseline value" (a new metric makes no promise until the baseline is saved again);
    * only the baseline, or a current value that is not a finite number: regressed, with
      ``ratio`` ``None`` and the ``problem`` (a figure that vanished or became NaN cannot be
      shown to be within the tolerance).

    Every row has a ``problem`` (``None`` when the ratio was computed).

    >>> from kd_eval.bench.baseline import compare_to_baseline
    >>> cfg = lambda p50: {"seq_len": 8, "batch_size": 1, "latency_ms": {"p50": p50}}
    >>> rows = compare_to_baseline({"configs": [cfg(12.0)]}, {"configs": [cfg(10.0)]}, 0.1)
    >>> rows[0]["ratio"], rows[0]["regressed"]
    (1.2, True)
    >>> rows = compare_to_baseline({"configs": [cfg(float("nan"))]}, {"configs": [cfg(10.0)]}, 0.1)
    >>> rows[0]["ratio"], rows[0]["regressed"], rows[0]["problem"]
    (None, True, 'current: nan is not a finite number')

    Raises:
        ConfigError: a negative or non-finite tolerance; a configuration without integer
            ``seq_len`` and ``batch_size``; a baseline figure that is not a finite number
            above 0 (NaN, infinite, 0, negative, a string): re-save the baseline.
    """
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"tolerance must be a finite number >= 0, got {tolerance}")
    base = _by_shape(baseline, "baseline")
    rows = []
    for shape, config in _by_shape(current, "current bench result").items():
        ref = base.get(shape)
        if ref is None:
            continue
        for metric, (path, higher_better) in COMPARED.items():
            now, then = _figure(config, path), _figure(ref, path)
            where = f"baseline S={shape[0]} B={shape[1]} {metric}"
            if isinstance(then, str) or (isinstance(then, float) and then <= 0):
                problem = then if isinstance(then, str) else f"{then:g} is not above 0"
                raise ConfigError(f"{where}: {problem}; re-save the baseline (--save-baseline)")
            if now is None and then is None:
                continue
            row: dict[str, Any] = {"seq_len": shape[0], "batch_size": shape[1], "metric": metric}
            row.update(baseline=then, current=now, ratio=None, tolerance=tolerance)
            if then is None:
                row.update(regressed=False, problem="no baseline value: not compared")
            elif not isinstance(now, float):
                row["current"] = None
                row["regressed"] = True
                row["problem"] = "current: " + (now or "not measured in this run")
            else:
                ratio = now / then
                regressed = ratio < 1 / (1 + tolerance) if higher_better else ratio > 1 + tolerance
                row.update(ratio=ratio, regressed=regressed, problem=None)
            rows.append(row)
    return rows
