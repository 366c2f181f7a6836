"""Per-role performance targets, read from a TOML file, and the pass/fail check.

A targets file has one table per role (e.g. ``worker``, ``judge``, ``drafter``); each names
the configuration it applies to (``seq_len``, ``batch_size``) and any of the limits in
:data:`LIMITS`. A limit whose configuration was not measured fails as ``"not measured"``.
See ``kd_eval/targets/default.toml`` for an example.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kd_eval.errors import ConfigError

#: limit key -> (path in a config's figures, "max" or "min").
LIMITS: dict[str, tuple[tuple[str, ...], str]] = {
    "max_latency_p50_ms": (("latency_ms", "p50"), "max"),
    "max_latency_p95_ms": (("latency_ms", "p95"), "max"),
    "max_latency_p99_ms": (("latency_ms", "p99"), "max"),
    "max_ttft_p50_ms": (("ttft_ms", "p50"), "max"),
    "max_ttft_p95_ms": (("ttft_ms", "p95"), "max"),
    "max_ttft_p99_ms": (("ttft_ms", "p99"), "max"),
    "min_prefill_tokens_per_s": (("prefill_tokens_per_s",), "min"),
    "min_decode_tokens_per_s": (("decode_tokens_per_s",), "min"),
    "max_peak_rss_delta_mb": (("peak_rss_delta_mb",), "max"),
}


@dataclass(frozen=True)
class RoleTarget:
    """The limits of one role at one configuration."""

    role: str
    seq_len: int
    batch_size: int
    limits: dict[str, float]


def default_targets_path() -> Path:
    """Return the path of the example targets file shipped with kd-eval."""
    return Path(str(resources.files("kd_eval") / "targets" / "default.toml"))


def load_targets(path: str | Path) -> list[RoleTarget]:
    """Read and validate a targets file.

    Raises:
        ConfigError: the file is missing, not TOML, or a role has a bad or unknown key.

    >>> from kd_eval.bench.targets import default_targets_path, load_targets
    >>> sorted(t.role for t in load_targets(default_targets_path()))
    ['drafter', 'judge', 'worker']
    """
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"targets file {source} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from exc
    if not data:
        raise ConfigError(f"{source}: no roles; add a table such as [worker]")
    return [_role(source, role, table) for role, table in data.items()]


def _role(source: Path, role: str, table: Any) -> RoleTarget:
    where = f"{source} [{role}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: a role is a table of limits")
    shape = {}
    for key in ("seq_len", "batch_size"):
        value = table.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {key!r} must be an integer >= 1, got {value!r}")
        shape[key] = value
    limits = {}
    for key, value in table.items():
        if key in shape:
            continue
        if key not in LIMITS:
            raise ConfigError(f"{where}: unknown key {key!r}; known limits: {', '.join(LIMITS)}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):  # TOML has nan and inf; no figure passes or fails them
            raise ConfigError(f"{where}: {key!r} must be a finite number, got {value!r}")
        limits[key] = float(value)
    if not limits:
        raise ConfigError(f"{where}: no limits; add e.g. max_latency_p95_ms = 100")
    return RoleTarget(role, shape["seq_len"], shape["batch_size"], limits)


def check_targets(bench: dict[str, Any], targets: list[RoleTarget]) -> list[dict[str, Any]]:
    """Check a bench result (JSON form) against every role's limits.

    Returns:
        One row per role and limit, with ``role``, ``limit``, ``threshold``, ``value``
        (``None`` if not measured) and ``passed``. A value that is not measured or not a
        finite number (NaN) fails.
    """
    by_shape = {(c["seq_len"], c["batch_size"]): c for c in bench["configs"]}
    rows = []
    for target in targets:
        figures = by_shape.get((target.seq_len, target.batch_size))
        for key, threshold in target.limits.items():
            path, sense = LIMITS[key]
            value: Any = figures
            for part in path:
                value = None if value is None else value.get(part)
            passed = (
                isinstance(value, int | float)
                and math.isfinite(value)
                and (value <= threshold if sense == "max" else value >= threshold)
            )
            rows.append(
                {
                    "role": target.role,
                    "seq_len": target.seq_len,
                    "batch_size": target.batch_size,
                    "limit": key,
                    "threshold": threshold,
                    "value": value,
                    "passed": passed,
                }
            )
    return rows
