"""The report document: build, merge, validate against the shipped schema, write, read.

Every ``kd-eval`` command writes a report with the sections it computed (the others are
``null``); ``kd-eval report`` merges several into one. The layout is the JSON Schema in
``kd_eval/report/report.schema.json`` (:func:`schema`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from kd_train.atomic import atomic_write_text

import kd_eval
from kd_eval.errors import ConfigError

#: The sections a report may carry.
SECTIONS = (
    "fidelity",
    "classification",
    "toolcalls",
    "bench",
    "targets",
    "baseline_comparison",
    "curves",
)


def schema() -> dict[str, Any]:
    """Return the report's JSON Schema (shipped with the package)."""
    text = (resources.files("kd_eval") / "report" / "report.schema.json").read_text("utf-8")
    return json.loads(text)


def new_report(name: str, **sections: Any) -> dict[str, Any]:
    """Return a report named ``name`` holding ``sections`` (the rest ``None``).

    >>> from kd_eval.report.document import new_report, validate
    >>> r = new_report("demo", targets=[])
    >>> validate(r, "demo")
    >>> r["fidelity"] is None
    True
    """
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown report sections {sorted(unknown)}")
    return {
        "schema_version": 1,
        "kind": "kd-eval-report",
        "name": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kd_eval_version": kd_eval.__version__,
        **{section: sections.get(section) for section in SECTIONS},
    }


def validate(report: dict[str, Any], where: str) -> None:
    """Raise :class:`~kd_eval.errors.ConfigError` naming ``where`` and the first violation."""
    try:
        jsonschema.validate(report, schema())
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(
            f"{where}: not a kd-eval report (at {path}: {exc.message}); pass a JSON file "
            "written by a kd-eval command"
        ) from exc


def merge_reports(reports: Sequence[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """Merge several reports; a section may come from one of them only.

    Raises:
        ConfigError: two reports carry the same section.
    """
    sections: dict[str, Any] = {}
    for report in reports:
        for section in SECTIONS:
            if report.get(section) is None:
                continue
            if section in sections:
                raise ConfigError(
                    f"two inputs both carry a {section!r} section (one is {report['name']!r}); "
                    "combine the results of one run only"
                )
            sections[section] = report[section]
    return new_report(name or (reports[0]["name"] if reports else "report"), **sections)


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Validate ``report`` and write it to ``path`` atomically as indented JSON."""
    validate(report, str(path))
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a report file.

    Raises:
        ConfigError: the file is missing, not JSON, or not a valid report.
    """
    source = Path(path)
    try:
        report = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"report {source} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"report {source}: not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from exc
    validate(report, str(source))
    return report
