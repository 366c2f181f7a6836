"""Classification metrics: accuracy, macro-F1, confusion matrix, class distributions.

With references ``y`` and predictions ``ŷ`` over ``n`` examples:

* accuracy ``= (1/n) Σ [y_i = ŷ_i]``
* per class ``c``: ``P_c = TP_c / (TP_c + FP_c)``, ``R_c = TP_c / (TP_c + FN_c)``,
  ``F1_c = 2 P_c R_c / (P_c + R_c)`` (0 when undefined)
* macro-F1 ``=`` mean of ``F1_c`` over the classes that occur in ``y`` or ``ŷ``
  (as ``sklearn.metrics.f1_score(average="macro")``; absent classes would only add zeros)
* confusion matrix ``C[r][p]`` = count of examples with reference ``labels[r]`` predicted as
  ``labels[p]``; rows are references, columns predictions.

A prediction outside the label set (an unparsable generation) is counted as
:data:`UNPARSED` and is always wrong.

Degenerate inputs: one example is scored like any other (accuracy 0 or 1); a class that
occurs only among the predictions has F1 0 (no true positive) and counts in the macro-F1;
when no class but :data:`UNPARSED` occurs the macro-F1 is 0. No examples at all, or
references and predictions of different lengths, are refused with
:class:`~kd_eval.errors.MetricInputError`: an accuracy over no examples has no value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kd_eval.errors import MetricInputError

#: The class given to a prediction that matched no label.
UNPARSED = "<unparsed>"


@dataclass(frozen=True)
class ClassificationMetrics:
    """Aggregated classification metrics and the confusion matrix over ``labels``."""

    n: int
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    labels: list[str]
    confusion: list[list[int]]
    reference_distribution: dict[str, int]
    prediction_distribution: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class_f1": self.per_class_f1,
            "labels": self.labels,
            "confusion": self.confusion,
            "reference_distribution": self.reference_distribution,
            "prediction_distribution": self.prediction_distribution,
        }


def classification_metrics(
    references: Sequence[str], predictions: Sequence[str], labels: Sequence[str] | None = None
) -> ClassificationMetrics:
    """Compute the metrics of ``predictions`` against ``references``.

    Args:
        references: the true label of each example.
        predictions: the predicted label of each example (same length).
        labels: the row/column order of the confusion matrix (default: sorted classes seen);
            classes seen but missing from it are appended, :data:`UNPARSED` last.

    >>> from kd_eval.tasks.classification import classification_metrics
    >>> m = classification_metrics(["a", "a", "b", "c"], ["a", "b", "b", "c"], ["a", "b", "c"])
    >>> m.accuracy, m.confusion
    (0.75, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    >>> round(m.macro_f1, 4)
    0.7778

    Raises:
        kd_eval.errors.MetricInputError: no examples, or the two lengths differ.
    """
    if len(references) != len(predictions):
        raise MetricInputError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise MetricInputError("classification metrics of zero examples: the eval set is empty")
    seen = set(references) | set(predictions)
    order = list(labels) if labels is not None else sorted(seen - {UNPARSED})
    order += sorted(seen - set(order) - {UNPARSED})
    if UNPARSED in seen and UNPARSED not in order:
        order.append(UNPARSED)
    index = {label: i for i, label in enumerate(order)}
    confusion = [[0] * len(order) for _ in order]
    for ref, pred in zip(references, predictions, strict=True):
        confusion[index[ref]][index[pred]] += 1
    per_class: dict[str, float] = {}
    for label in order:
        if label not in seen or label == UNPARSED:
            continue
        i = index[label]
        tp = confusion[i][i]
        fp = sum(row[i] for row in confusion) - tp
        fn = sum(confusion[i]) - tp
        per_class[label] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    correct = sum(r == p for r, p in zip(references, predictions, strict=True))
    return ClassificationMetrics(
        n=len(references),
        accuracy=correct / len(references),
        macro_f1=sum(per_class.values()) / len(per_class) if per_class else 0.0,
        per_class_f1=per_class,
        labels=order,
        confusion=confusion,
        reference_distribution=_distribution(references, order),
        prediction_distribution=_distribution(predictions, order),
    )


def _distribution(values: Sequence[str], order: Sequence[str]) -> dict[str, int]:
    counts = Counter(values)
    return {label: counts.get(label, 0) for label in order}


def match_label(text: str, labels: Sequence[str]) -> str:
    """Return the label that generated ``text`` starts with (case and spaces ignored).

    The longest matching label wins (so "Yes definitely." beats "Yes."); no match gives
    :data:`UNPARSED`.

    >>> from kd_eval.tasks.classification import match_label
    >>> match_label("  yes definitely. and more", ["Yes.", "Yes definitely."])
    'Yes definitely.'
    >>> match_label("maybe", ["Yes.", "No."])
    '<unparsed>'
    """
    norm = " ".join(text.split()).casefold()
    best, best_len = UNPARSED, -1
    for label in labels:
        key = " ".join(label.split()).casefold()
        if norm.startswith(key) and len(key) > best_len:
            best, best_len = label, len(key)
    return best
