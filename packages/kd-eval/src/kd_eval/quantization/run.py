"""The ``quantization`` section of a report: fidelity, task metric, size and latency per arm.

Inputs are checked before any model is loaded: the scheme
(:func:`~kd_eval.quantization.compare.scheme_of`), the ONNX files (one per arm at most, each
existing; :func:`~kd_eval.quantization.footprint.resolve_onnx`). Then the arms are loaded
(:func:`~kd_eval.quantization.compare.load_arms`), scored
(:func:`~kd_eval.quantization.compare.compare_arms`) and their ONNX files measured
(:func:`~kd_eval.quantization.footprint.onnx_figures`). Size and latency appear only for
the arms whose ONNX file was given: they are measured, never estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from kd_train.cliutil import progress_bar
from kd_train.data.schema import KDRecord

from kd_eval.errors import ConfigError
from kd_eval.loading.models import LoadedModel, load_model
from kd_eval.quantization.compare import ARMS, compare_arms, load_arms, scheme_of
from kd_eval.quantization.footprint import onnx_figures, resolve_onnx
from kd_eval.tasks.run import run_classification, run_toolcalls

TaskKind = Literal["classification", "toolcalls"]

#: The figures of each task kept per arm (the task's own report section has them all).
TASK_FIGURES: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "chance_accuracy"),
    "toolcalls": ("json_validity", "tool_name_accuracy", "args_f1_strict", "args_f1_lax"),
}


def parse_onnx(specs: Sequence[str], have_qat: bool) -> dict[str, Path]:
    """``NAME=PATH`` arguments as ``{arm: .onnx file}``, every file checked to exist.

    >>> from kd_eval.quantization.run import parse_onnx
    >>> parse_onnx(["fp32=x.onnx"], have_qat=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kd_eval.errors.ConfigError: --onnx fp32=x.onnx: no such file; ...

    Raises:
        ConfigError: a spec is not ``NAME=PATH``, names no arm (fp32, ptq, qat), names an
            arm twice or ``qat`` without a QAT student, or its file is missing.
    """
    files: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise ConfigError(f"--onnx {spec!r}: expected NAME=PATH, e.g. --onnx ptq=x/model.onnx")
        if name not in ARMS:
            raise ConfigError(
                f"--onnx {spec}: {name!r} is not an arm; use one of {', '.join(ARMS)}"
            )
        if name in files:
            raise ConfigError(f"--onnx {spec}: {name} is given twice")
        if name == "qat" and not have_qat:
            raise ConfigError(f"--onnx {spec}: there is no qat arm without --qat DIR")
        files[name] = resolve_onnx(Path(path), name)
    return files


def task_runner(
    kind: TaskKind | None,
    records: Sequence[KDRecord],
    labels: Sequence[str] = (),
    progress: bool = False,
) -> Callable[[LoadedModel], dict[str, Any]] | None:
    """The task metric of one arm (:mod:`kd_eval.tasks.run`), reduced to its headline figures."""
    if kind is None:
        return None

    def run(loaded: LoadedModel) -> dict[str, Any]:
        if kind == "classification":
            section = run_classification(loaded, records, labels, progress=progress)
        else:
            section = run_toolcalls(loaded, records, progress=progress)
        n = len(section["examples"])
        return {"kind": kind, "n": n, **{k: section[k] for k in TASK_FIGURES[kind]}}

    return run


def evaluate_quantization(
    teacher_path: Path,
    fp32_dir: Path,
    qat_dir: Path | None,
    records: Sequence[KDRecord],
    *,
    data: str,
    scheme: str | None = None,
    group_size: int | None = None,
    onnx: Mapping[str, Path] | None = None,
    length: int = 64,
    runs: int = 30,
    task: Callable[[LoadedModel], dict[str, Any]] | None = None,
    progress: bool = False,
    **bootstrap: Any,
) -> dict[str, Any]:
    """Compare the arms and return the ``quantization`` section of a report.

    ``onnx`` maps arms to their ONNX files (already resolved, :func:`parse_onnx`); ``length``
    and ``runs`` set the latency measurement. ``bootstrap``: resamples, seed, confidence.

    Raises:
        ConfigError: see :func:`~kd_eval.quantization.compare.scheme_of` and
            :func:`~kd_eval.quantization.compare.load_arms`.
        kd_eval.errors.VocabularyMismatchError: teacher and students, or the two students,
            do not share one vocabulary.
    """
    config, source = scheme_of(qat_dir, scheme, group_size)
    onnx = dict(onnx or {})
    if "qat" in onnx and qat_dir is None:
        raise ConfigError("--onnx qat=...: there is no qat arm without --qat DIR")
    teacher = load_model(teacher_path)
    arms = load_arms(fp32_dir, qat_dir, config)
    compared = compare_arms(teacher, arms, records, task=task, progress=progress, **bootstrap)
    for name in compared["arms"]:
        compared["arms"][name]["onnx"] = None
    for name in progress_bar(list(onnx), desc="onnx", unit="model", enabled=progress):
        compared["arms"][name]["onnx"] = onnx_figures(onnx[name], length, runs)
    return {
        "teacher": str(teacher.path),
        "data": data,
        "n_examples": len(records),
        "scheme": {
            "scheme": config.scheme,
            "group_size": config.weight_group_size,
            "source": source,
        },
        **compared,
    }
