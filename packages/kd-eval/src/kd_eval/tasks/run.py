"""Run a model over an eval set for a task and compute its metrics.

Classification: the reference of a record is its ``completion`` (stripped), which must be
one of the labels; the prediction is the label with the highest log-likelihood given the
prompt (``mode="likelihood"``) or the label the greedy generation starts with
(``mode="generate"``). Tool calls: the reference is the completion parsed as a tool call;
the model generates greedily and its output is scored by :mod:`kd_eval.tasks.toolcalls`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from kd_train.cliutil import progress_bar
from kd_train.data.schema import KDRecord

from kd_eval.errors import EvalDataError
from kd_eval.loading.models import LoadedModel
from kd_eval.tasks.classification import classification_metrics, match_label
from kd_eval.tasks.predict import classify_by_likelihood, generate_text
from kd_eval.tasks.toolcalls import aggregate_tool_scores, parse_tool_call, score_tool_call

ClassifyMode = Literal["likelihood", "generate"]


def run_classification(
    loaded: LoadedModel,
    records: Sequence[KDRecord],
    labels: Sequence[str],
    *,
    mode: ClassifyMode = "likelihood",
    length_normalize: bool = False,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """Classify every record and return the ``classification`` section of a report.

    Raises:
        EvalDataError: the set is empty, or a record's completion is not one of ``labels``.
    """
    if not records:
        raise EvalDataError("the eval set is empty; classification needs at least one record")
    if len(set(labels)) < 2:
        raise EvalDataError(f"a classification needs at least 2 distinct labels, got {labels}")
    label_set = set(labels)
    references = []
    for record in records:
        ref = record.completion.strip()
        if ref not in label_set:
            raise EvalDataError(
                f"record {record.id!r}: completion {ref!r} is not one of the {len(labels)} "
                "labels; pass the label set the data was built with"
            )
        references.append(ref)
    predictions = []
    for record in progress_bar(records, desc="classify", unit="ex", enabled=progress):
        if mode == "likelihood":
            # Score each label as this record's completion is written: same leading space.
            completion = record.completion
            prefix = completion[: len(completion) - len(completion.lstrip())]
            pred = classify_by_likelihood(
                loaded.model,
                loaded.tokenizer,
                record.prompt,
                labels,
                length_normalize=length_normalize,
                prefix=prefix,
            )
        else:
            text = generate_text(loaded.model, loaded.tokenizer, record.prompt, max_new_tokens)
            pred = match_label(text, labels)
        predictions.append(pred)
    metrics = classification_metrics(references, predictions, labels)
    return {
        "model": str(loaded.path),
        "parameters": loaded.parameters,
        "mode": mode,
        "chance_accuracy": 1.0 / len(labels),
        **metrics.to_dict(),
        "examples": [
            {"id": r.id, "reference": ref, "prediction": pred}
            for r, ref, pred in zip(records, references, predictions, strict=True)
        ],
    }


def run_toolcalls(
    loaded: LoadedModel,
    records: Sequence[KDRecord],
    *,
    fixtures: dict[str, Any] | None = None,
    max_new_tokens: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate a tool call for every record and return the ``toolcalls`` section of a report.

    Raises:
        EvalDataError: the set is empty, or a record's completion is not a tool call.
    """
    if not records:
        raise EvalDataError("the eval set is empty; tool-call metrics need at least one record")
    references = []
    for record in records:
        ref = parse_tool_call(record.completion)
        if ref is None:
            raise EvalDataError(
                f"record {record.id!r}: the completion is not a JSON tool call "
                '{"name": ..., "arguments": {...}}; tool-call metrics need one as reference'
            )
        references.append(ref)
    rows = []
    scores = []
    for record, ref in progress_bar(
        list(zip(records, references, strict=True)),
        desc="toolcalls",
        unit="ex",
        enabled=progress,
    ):
        output = generate_text(loaded.model, loaded.tokenizer, record.prompt, max_new_tokens)
        score = score_tool_call(output, ref, fixtures)
        scores.append(score)
        rows.append({"id": record.id, "output": output, **score.__dict__})
    return {
        "model": str(loaded.path),
        "parameters": loaded.parameters,
        **aggregate_tool_scores(scores),
        "examples": rows,
    }
