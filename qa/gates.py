"""Typed access to ``qa/gates.toml``: the one file with every floor and tolerance.

Every gate reads its section through :func:`load`; nothing else parses the file. A floor may
only rise: :func:`lowered_floors` compares two versions of the file and names every floor that
went down, so the coverage gate can refuse a change that lowers one.

>>> floors = {"coverage": {"packages": {"kd_train": {"line": 80.0}}}}
>>> lowered_floors(floors, {"coverage": {"packages": {"kd_train": {"line": 79.5}}}})
['coverage.packages.kd_train.line: 80.0 -> 79.5']
"""

from __future__ import annotations

import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GATES = ROOT / "qa" / "gates.toml"
REPORTS = ROOT / "qa" / "reports"
#: Keys whose values are floors (they may only rise). Everything else is a setting.
FLOOR_KEYS = frozenset({"line", "branch", "score", "diff"})


class GateConfigError(Exception):
    """``qa/gates.toml`` is missing a key or holds a value of the wrong type."""


@dataclass(frozen=True)
class CoverageFloor:
    """Line and branch floors (percent) for a package or a critical module."""

    line: float
    branch: float
    target_line: float | None = None
    target_branch: float | None = None
    pending: bool = False


@dataclass(frozen=True)
class CoverageGates:
    """The ``[coverage]`` section."""

    packages: dict[str, CoverageFloor]
    modules: dict[str, CoverageFloor]
    diff: float
    #: Percentage points a floor sits below the figure it was set from (see ``floor_from``).
    margin: float = 0.0


@dataclass(frozen=True)
class MutationModule:
    """One critical module under mutation: its floor, its fast tests and its sample size."""

    name: str
    score: float
    tests: tuple[str, ...]
    nlocations: int
    pending: bool = False


@dataclass(frozen=True)
class MutationGates:
    """The ``[mutation]`` section."""

    seed: int
    timeout_factor: float
    max_minutes: float
    quick_max_minutes: float
    quick_nlocations: int
    modules: dict[str, MutationModule] = field(default_factory=dict)


@dataclass(frozen=True)
class SecurityGates:
    """The ``[security]`` section."""

    paths: tuple[str, ...]
    exclude: tuple[str, ...]
    bandit_skips: tuple[str, ...]


def _num(table: dict[str, Any], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateConfigError(f"qa/gates.toml: {where}.{key} must be a number, got {value!r}")
    return float(value)


def _opt_num(table: dict[str, Any], key: str, where: str) -> float | None:
    return None if key not in table else _num(table, key, where)


def _strs(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GateConfigError(f"qa/gates.toml: {where}.{key} must be a list of strings")
    return tuple(value)


def _floor(table: dict[str, Any], where: str) -> CoverageFloor:
    return CoverageFloor(
        line=_num(table, "line", where),
        branch=_num(table, "branch", where),
        target_line=_opt_num(table, "target_line", where),
        target_branch=_opt_num(table, "target_branch", where),
        pending=bool(table.get("pending", False)),
    )


def read(path: Path = GATES) -> dict[str, Any]:
    """Return the raw TOML of the gates file."""
    return tomllib.loads(path.read_text(encoding="utf-8"))


def coverage(raw: dict[str, Any]) -> CoverageGates:
    """Parse the ``[coverage]`` section."""
    cov = raw.get("coverage", {})
    return CoverageGates(
        packages={
            k: _floor(v, f"coverage.packages.{k}") for k, v in cov.get("packages", {}).items()
        },
        modules={k: _floor(v, f"coverage.modules.{k}") for k, v in cov.get("modules", {}).items()},
        diff=_num(cov, "diff", "coverage"),
        margin=_opt_num(cov, "margin", "coverage") or 0.0,
    )


def mutation(raw: dict[str, Any]) -> MutationGates:
    """Parse the ``[mutation]`` section."""
    mut = raw.get("mutation", {})
    modules = {}
    for name, table in mut.get("modules", {}).items():
        where = f"mutation.modules.{name}"
        modules[name] = MutationModule(
            name=name,
            score=_num(table, "score", where),
            tests=_strs(table, "tests", where),
            nlocations=int(_num(table, "nlocations", where)),
            pending=bool(table.get("pending", False)),
        )
    return MutationGates(
        seed=int(_num(mut, "seed", "mutation")),
        timeout_factor=_num(mut, "timeout_factor", "mutation"),
        max_minutes=_num(mut, "max_minutes", "mutation"),
        quick_max_minutes=_num(mut, "quick_max_minutes", "mutation"),
        quick_nlocations=int(_num(mut, "quick_nlocations", "mutation")),
        modules=modules,
    )


def security(raw: dict[str, Any]) -> SecurityGates:
    """Parse the ``[security]`` section."""
    sec = raw.get("security", {})
    return SecurityGates(
        paths=_strs(sec, "paths", "security"),
        exclude=_strs(sec, "exclude", "security"),
        bandit_skips=_strs(sec, "bandit_skips", "security"),
    )


def _floors(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_floors(value, name + "."))
        elif key in FLOOR_KEYS and isinstance(value, int | float):
            out[name] = float(value)
    return out


def lowered_floors(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Name every floor of ``old`` that is lower (or gone) in ``new``."""
    before, after = _floors(old), _floors(new)
    out = []
    for name, value in sorted(before.items()):
        if name not in after:
            out.append(f"{name}: {value} -> removed")
        elif after[name] < value:
            out.append(f"{name}: {value} -> {after[name]}")
    return out


def at_ref(ref: str, root: Path = ROOT) -> dict[str, Any] | None:
    """Return ``qa/gates.toml`` as it is at git ``ref``, or None if git cannot show it."""
    proc = subprocess.run(
        ["git", "show", f"{ref}:qa/gates.toml"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return tomllib.loads(proc.stdout) if proc.returncode == 0 else None


def module_path(module: str, root: Path = ROOT) -> Path | None:
    """Return the source file or package folder of a dotted module name, or None if absent.

    ``kd_train.losses`` maps to ``packages/kd-train/src/kd_train/losses`` (a folder: every file
    below it counts); ``kd_train.data.validate`` to ``.../kd_train/data/validate.py``.
    """
    top, *rest = module.split(".")
    base = root / "packages" / top.replace("_", "-") / "src" / top
    target = base.joinpath(*rest)
    if target.with_suffix(".py").is_file():
        return target.with_suffix(".py")
    if target.is_dir() and any(target.rglob("*.py")):
        return target
    return None


def dotted(path: str) -> str | None:
    """Return the dotted module name of a source path (``.../kd_train/data/x.py`` -> ...).

    >>> dotted("packages/kd-train/src/kd_train/data/validate.py")
    'kd_train.data.validate'
    >>> dotted("/venv/site-packages/kd_eval/__init__.py")
    'kd_eval'
    >>> dotted("qa/gates.py") is None
    True
    """
    parts = Path(path).with_suffix("").parts
    start = next((i for i, p in enumerate(parts) if p.startswith("kd_")), None)
    if start is None:
        return None
    names = [p for p in parts[start:] if p != "__init__"]
    return ".".join(names)
