"""KD datasets: the record schema, streaming JSONL I/O, validation and tokenization."""

from kd_train.data.schema import SCHEMA_VERSION, SPAN_KINDS, KDRecord, Span, TeacherTopK

__all__ = ["SCHEMA_VERSION", "SPAN_KINDS", "KDRecord", "Span", "TeacherTopK"]
