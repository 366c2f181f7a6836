"""The KD record: one training example as it is stored in a JSONL dataset (one per line).

A record (schema version :data:`SCHEMA_VERSION`) holds:

``id`` (str, unique in a dataset)
    A stable identifier; generation and caching are keyed on it.
``prompt`` (str)
    The input text given to the teacher. Its tokens are masked out of the loss.
``completion`` (str)
    The teacher's answer. The student learns to produce it.
``teacher_topk`` (optional object)
    Per completion token, the teacher's top-k token ids (``ids``, ints) and log-probs
    (``logprobs``, floats <= 0), both ``[n_tokens][k]`` in the teacher tokenizer's ids.
``spans`` (optional list)
    Labelled character ranges ``{"kind", "start", "end"}`` of ``completion``
    (``0 <= start < end <= len(completion)``), ``kind`` one of :data:`SPAN_KINDS`.
``metadata`` (optional object)
    Free-form JSON, carried along untouched.

Validation (field types, ranges, file/line error messages) lives in
:mod:`kd_train.data.validate`; this module only defines the shape.

>>> from kd_train.data.schema import KDRecord, Span
>>> rec = KDRecord(id="a1", prompt="2+2=", completion="4", spans=[Span("integration", 0, 1)])
>>> KDRecord.from_dict(rec.to_dict()) == rec
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Version of the record layout; written as ``"schema_version"`` in every record.
SCHEMA_VERSION = 1

#: The kinds a labelled span may have.
SPAN_KINDS = ("tool_name", "json_args", "integration", "code_mode")


@dataclass(frozen=True)
class Span:
    """A labelled character range ``[start, end)`` of a record's completion."""

    kind: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form ``{"kind", "start", "end"}``."""
        return {"kind": self.kind, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class TeacherTopK:
    """The teacher's top-k ids and log-probs for each completion token (``[n][k]`` each)."""

    ids: list[list[int]]
    logprobs: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form ``{"ids", "logprobs"}``."""
        return {"ids": self.ids, "logprobs": self.logprobs}


@dataclass(frozen=True)
class KDRecord:
    """One KD example: prompt, teacher completion, optional top-k, spans and metadata."""

    id: str
    prompt: str
    completion: str
    teacher_topk: TeacherTopK | None = None
    spans: list[Span] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object written as one line of a dataset (optional fields omitted)."""
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "prompt": self.prompt,
            "completion": self.completion,
        }
        if self.teacher_topk is not None:
            out["teacher_topk"] = self.teacher_topk.to_dict()
        if self.spans:
            out["spans"] = [s.to_dict() for s in self.spans]
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KDRecord:
        """Build a record from its JSON object (validated beforehand by the caller)."""
        topk = data.get("teacher_topk")
        return cls(
            id=data["id"],
            prompt=data["prompt"],
            completion=data["completion"],
            teacher_topk=TeacherTopK(topk["ids"], topk["logprobs"]) if topk is not None else None,
            spans=[Span(s["kind"], s["start"], s["end"]) for s in data.get("spans", [])],
            metadata=dict(data.get("metadata", {})),
        )
