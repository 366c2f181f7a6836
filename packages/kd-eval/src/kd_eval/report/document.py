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
    "drafter",
    "quantization",
)
#: The sections added after the first release. A report written before them lacks their
#: keys and reads as if they were not computed (null); every other section stays required.
LATER_SECTIONS = ("drafter", "quantization")


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


def with_before(report: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``report`` carrying ``before``: the same evaluations of the untrained student.

    ``before`` is a whole report (e.g. merged from the ``*-before.json`` results); the HTML
    page then shows every headline figure before and after (:func:`headline_figures`).

    >>> from kd_eval.report.document import new_report, validate, with_before
    >>> after = new_report("after", targets=[])
    >>> both = with_before(after, new_report("before", targets=[]))
    >>> validate(both, "demo")
    >>> both["before"]["name"]
    'before'
    """
    if before is None:
        return report
    validate(before, "the before report")
    return {**report, "before": before}


def headline_figures(section: str, data: Any) -> dict[str, float | None]:
    """The figures of one report section that a before/after comparison shows, by name.

    Fidelity and drafter: every aggregate estimate's value; classification: accuracy,
    macro-F1 and chance accuracy; tool calls: its rates; benchmark: p50 and p95 latency per
    configuration; quantization: each arm's forward KL. Other sections (targets, baselines,
    curves) have none.

    >>> from kd_eval.report.document import headline_figures
    >>> headline_figures("classification", {"accuracy": 0.5, "macro_f1": 0.4,
    ...                                     "chance_accuracy": 0.05})
    {'accuracy': 0.5, 'macro-F1': 0.4, 'chance accuracy': 0.05}
    """
    if data is None:
        return {}
    if section in ("fidelity", "drafter"):
        return {name: est["value"] for name, est in data["aggregate"].items()}
    if section == "classification":
        return {
            "accuracy": data["accuracy"],
            "macro-F1": data["macro_f1"],
            "chance accuracy": data["chance_accuracy"],
        }
    if section == "toolcalls":
        keys = ("json_validity", "tool_name_accuracy", "args_f1_strict", "args_f1_lax")
        return {key: data[key] for key in (*keys, "fixture_hit_rate")}
    if section == "quantization":
        return {f"{arm} forward_kl": f["forward_kl"]["value"] for arm, f in data["arms"].items()}
    if section == "bench":
        return {
            f"S={c['seq_len']} B={c['batch_size']} {p} ms": c["latency_ms"][p]
            for c in data["configs"]
            for p in ("p50", "p95")
        }
    return {}


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Validate ``report`` and write it to ``path`` atomically as indented JSON."""
    validate(report, str(path))
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a report file.

    A report written before a section of :data:`LATER_SECTIONS` existed reads with that
    section null.

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
    if isinstance(report, dict) and report.get("kind") == "kd-eval-report":
        # a section added after the file was written (drafter, quantization) was not computed
        for section in LATER_SECTIONS:
            report.setdefault(section, None)
    validate(report, str(source))
    return report
