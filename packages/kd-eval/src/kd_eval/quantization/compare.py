"""What quantization costs a student, and how much of it quantization-aware training wins back.

Three arms of one run, scored against the teacher on the same held-out records
(:func:`kd_eval.fidelity.run.evaluate_fidelity`):

``fp32``
    the student distilled in float;
``ptq``
    the same student with the scheme applied after training (built in memory with
    :func:`kd_train.trainer.qat.prepare_qat`: the integer weights and scales an export of
    ``kd-train quantize``'s copy gets);
``qat``
    the student distilled with the ``qat`` section (its ``quantization.json`` gives the
    scheme of ``ptq``).

Per arm: forward KL (teacher to student, nats per token, mean over examples) and top-1
agreement, each with a percentile-bootstrap interval over examples. For ``ptq`` and ``qat``
the paired difference to ``fp32``, ``d_i = KL_arm,i - KL_fp32,i`` on each record, with a
bootstrap interval of its mean (:func:`paired_difference`): what the arm costs, free of the
spread between records. And the share of PTQ's loss that QAT recovers, per metric ``m``::

    recovered = (m_ptq - m_qat) / (m_ptq - m_fp32)

1 when QAT is as good as fp32, 0 when it is no better than PTQ. It is ``null``, with the
reason, unless PTQ's paired KL loss has an interval above 0 (:func:`recovered_share`): a
ratio over a loss the held-out set cannot tell from 0 means nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kd_train.data.schema import KDRecord
from kd_train.trainer import qat
from kd_train.trainer.train_config import QATConfig
from kd_train.typed_config import InvalidConfigError, validate

from kd_eval.errors import ConfigError, MetricInputError, VocabularyMismatchError
from kd_eval.fidelity.run import FidelityResult, evaluate_fidelity
from kd_eval.loading.models import LoadedModel, check_same_vocabulary, load_model
from kd_eval.stats.bootstrap import Estimate, bootstrap_mean

#: The arms, in report order.
ARMS = ("fp32", "ptq", "qat")
#: The fidelity figures each arm reports (and :func:`recovered_share` is taken of).
FIGURES = ("forward_kl", "top1_agreement")


def fidelity_figures(result: FidelityResult) -> dict[str, Any]:
    """An arm's forward KL and top-1 agreement estimates and its per-example KL.

    Raises:
        VocabularyMismatchError: teacher and student have different tokenizers, so there is
            no per-token KL (``result.tokenizers == "different"``).
    """
    if result.tokenizers != "same":
        raise VocabularyMismatchError(
            f"teacher {result.teacher} and student {result.student} use different tokenizers, "
            "so there is no per-token KL to compare quantized students by; use the "
            "teacher's tokenizer for the student"
        )
    figures: dict[str, Any] = {name: result.aggregate[name].to_dict() for name in FIGURES}
    figures["per_example_kl"] = [float(row["forward_kl"]) for row in result.examples]
    return figures


def paired_difference(arm: Sequence[float], base: Sequence[float], **bootstrap: Any) -> Estimate:
    """Mean of ``arm_i - base_i`` over the same examples, with a bootstrap interval.

    ``bootstrap`` is passed to :func:`~kd_eval.stats.bootstrap.bootstrap_mean` (resamples,
    seed, confidence).

    >>> from kd_eval.quantization.compare import paired_difference
    >>> d = paired_difference([0.5, 0.7, 0.9], [0.4, 0.5, 0.6], resamples=200)
    >>> round(d.value, 6), d.low > 0
    (0.2, True)

    Raises:
        MetricInputError: the two lists differ in length (not the same examples).
    """
    if len(arm) != len(base):
        raise MetricInputError(
            f"paired difference of {len(arm)} and {len(base)} values: both arms must be "
            "scored on the same examples"
        )
    return bootstrap_mean([a - b for a, b in zip(arm, base, strict=True)], **bootstrap)


def recovered_share(
    fp32: Mapping[str, Any], ptq: Mapping[str, Any], qat_arm: Mapping[str, Any], metric: str
) -> tuple[float | None, str | None]:
    """``(m_ptq - m_qat) / (m_ptq - m_fp32)`` of ``metric``, or ``None`` and the reason.

    Each arm maps figure names to estimates (``{"value": ...}``); ``ptq["kl_vs_fp32"]`` is
    PTQ's paired KL difference to fp32 (:func:`paired_difference`), whose interval must lie
    above 0.

    >>> from kd_eval.quantization.compare import recovered_share
    >>> est = lambda v, low=0.0: {"value": v, "low": low}
    >>> fp32, qat = {"forward_kl": est(0.2)}, {"forward_kl": est(0.25)}
    >>> recovered_share(fp32, {"forward_kl": est(0.3), "kl_vs_fp32": est(0.1, 0.05)},
    ...                 qat, "forward_kl")
    (0.5, None)
    >>> recovered_share(fp32, {"forward_kl": est(0.3), "kl_vs_fp32": est(0.1, -0.01)},
    ...                 qat, "forward_kl")[0] is None
    True
    """
    loss = ptq["kl_vs_fp32"]
    if loss["low"] <= 0:
        return None, (
            f"PTQ's paired KL difference to fp32 ({loss['value']:+.4g}, interval low "
            f"{loss['low']:+.4g}) is not above 0: the held-out set resolves no loss to recover"
        )
    lost = ptq[metric]["value"] - fp32[metric]["value"]
    if lost == 0:
        return None, f"PTQ's {metric} equals fp32's: nothing to recover"
    return (ptq[metric]["value"] - qat_arm[metric]["value"]) / lost, None


def scheme_of(
    qat_dir: Path | None, scheme: str | None, group_size: int | None
) -> tuple[QATConfig, str]:
    """The scheme PTQ applies, and where it came from (``"qat"`` or ``"flags"``).

    From the QAT student's ``quantization.json`` when ``qat_dir`` is given (``scheme`` and
    ``group_size``, if given too, must agree with it), else from ``scheme``/``group_size``.

    Raises:
        ConfigError: no QAT student and no scheme; ``qat_dir`` holds no ``quantization.json``
            or a post-training-quantized student; the flags contradict the record.
    """
    if qat_dir is None:
        if scheme is None:
            raise ConfigError(
                "give the QAT student (--qat DIR), whose scheme PTQ applies, or --scheme"
            )
        return _config(scheme, group_size, "--scheme"), "flags"
    try:
        record = qat.read_quantization(qat_dir)
    except qat.QuantizationRecordError as exc:
        raise ConfigError(f"--qat: {exc}") from exc
    if record is None:
        raise ConfigError(
            f"--qat {qat_dir} has no {qat.QUANTIZATION_FILE}, so it is not a QAT student; "
            "pass the student of a kd-train distill run with a qat section"
        )
    if record.origin != "qat":
        raise ConfigError(
            f"--qat {qat_dir}: its {qat.QUANTIZATION_FILE} says origin {record.origin!r} "
            "(post-training quantized); pass the QAT run's student"
        )
    config = record.qat_config()
    asked = (scheme, group_size)
    if scheme is not None and (asked[0], asked[1] or config.weight_group_size) != (
        config.scheme,
        config.weight_group_size,
    ):
        raise ConfigError(
            f"--scheme {scheme} --group-size {group_size} contradicts the QAT student's "
            f"{qat.QUANTIZATION_FILE} ({config.scheme}, group size {config.weight_group_size}); "
            "drop the flags: PTQ uses the QAT student's scheme"
        )
    return config, "qat"


def _config(scheme: str, group_size: int | None, where: str) -> QATConfig:
    data: dict[str, Any] = {"scheme": scheme}
    if group_size is not None:
        data["group_size"] = group_size
    try:
        config: QATConfig = validate(QATConfig, data, InvalidConfigError, where)
    except InvalidConfigError as exc:
        raise ConfigError(str(exc)) from exc
    return config


def load_arms(fp32_dir: Path, qat_dir: Path | None, config: QATConfig) -> dict[str, LoadedModel]:
    """Load the fp32 student, build its PTQ version in memory, load the QAT student.

    Raises:
        ConfigError: the fp32 student carries a ``quantization.json`` (it is not float).
        VocabularyMismatchError: the fp32 and QAT students have different vocabularies.
        kd_eval.errors.ModelLoadError: a directory cannot be loaded.
    """
    if qat.read_quantization(fp32_dir) is not None:
        raise ConfigError(
            f"--fp32 {fp32_dir} carries {qat.QUANTIZATION_FILE}: it is a quantized student; "
            "pass the float student of the fp32 run"
        )
    arms = {"fp32": load_model(fp32_dir), "ptq": load_model(fp32_dir)}
    try:
        qat.prepare_qat(arms["ptq"].model, config)
    except (qat.QATUnavailableError, InvalidConfigError) as exc:
        raise ConfigError(f"post-training quantization of {fp32_dir}: {exc}") from exc
    arms["ptq"].quantization = config.scheme
    if qat_dir is not None:
        arms["qat"] = load_model(qat_dir)
        check_same_students(arms["fp32"], arms["qat"])
    return arms


def check_same_students(fp32: LoadedModel, quantized: LoadedModel) -> None:
    """Raise unless the two students share one vocabulary (size and token -> id map).

    Raises:
        VocabularyMismatchError: naming both directories.
    """
    if fp32.vocab_size != quantized.vocab_size or (
        fp32.tokenizer.get_vocab() != quantized.tokenizer.get_vocab()
    ):
        raise VocabularyMismatchError(
            f"--fp32 {fp32.path} ({fp32.vocab_size} tokens) and --qat {quantized.path} "
            f"({quantized.vocab_size} tokens) have different vocabularies, so they are not "
            "students of one run; pass the fp32 and QAT students distilled from one teacher"
        )


def compare_arms(
    teacher: LoadedModel,
    arms: Mapping[str, LoadedModel],
    records: Sequence[KDRecord],
    *,
    task: Callable[[LoadedModel], dict[str, Any]] | None = None,
    progress: bool = False,
    **bootstrap: Any,
) -> dict[str, Any]:
    """Score every arm; return ``{"arms", "recovered", "examples"}`` of the report section.

    ``task`` (optional) computes the task metric of one arm. ``bootstrap`` goes to every
    interval (resamples, seed, confidence).

    Raises:
        VocabularyMismatchError: the teacher's vocabulary is not the students'.
    """
    check_same_vocabulary(teacher, arms["fp32"])
    figures: dict[str, dict[str, Any]] = {}
    for name, student in arms.items():
        result = evaluate_fidelity(teacher, student, records, progress=progress, **bootstrap)
        figures[name] = fidelity_figures(result)
        figures[name]["student"] = str(student.path)
        figures[name]["n_tokens"] = sum(int(row["n_tokens"]) for row in result.examples)
        figures[name]["task"] = None if task is None else task(student)
    base = figures["fp32"]["per_example_kl"]
    for name, arm in figures.items():
        arm["kl_vs_fp32"] = (
            None
            if name == "fp32"
            else paired_difference(arm["per_example_kl"], base, **bootstrap).to_dict()
        )
    recovered: dict[str, Any] = {}
    for metric in FIGURES:
        if "qat" in figures:
            value, reason = recovered_share(figures["fp32"], figures["ptq"], figures["qat"], metric)
        else:
            value, reason = None, "no QAT student given (--qat)"
        recovered[metric] = {"value": value, "reason": reason}
    examples = [
        {"id": record.id, **{name: arm["per_example_kl"][i] for name, arm in figures.items()}}
        for i, record in enumerate(records)
    ]
    for arm in figures.values():
        del arm["per_example_kl"]
    return {"arms": figures, "recovered": recovered, "examples": examples}
