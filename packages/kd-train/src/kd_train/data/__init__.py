"""KD datasets: the record schema, streaming JSONL I/O, validation and tokenization.

- :mod:`kd_train.data.schema`: :class:`~kd_train.data.schema.KDRecord` and its parts.
- :mod:`kd_train.data.validate`: one line to one record, or a
  :class:`~kd_train.data.errors.DataValidationError`.
- :mod:`kd_train.data.jsonl`: streaming reader, atomic writer.
- :mod:`kd_train.data.quarantine`: whole-file validation, strict or with a quarantine file.
- :mod:`kd_train.data.tokenization`: records to ids, labels, span masks and teacher top-k.
- :mod:`kd_train.data.batching`: padding, attention mask and the next-token view.
- :mod:`kd_train.data.labels`: label sets shared by toy datasets and their evaluation.
"""

from kd_train.data.batching import Batch, collate
from kd_train.data.errors import DataValidationError
from kd_train.data.jsonl import RecordWriter, read_records, write_records
from kd_train.data.quarantine import ValidationReport, iter_valid_records, validate_file
from kd_train.data.schema import SCHEMA_VERSION, SPAN_KINDS, KDRecord, Span, TeacherTopK
from kd_train.data.tokenization import (
    IGNORE_INDEX,
    Example,
    SequenceTooLongError,
    TokenizationError,
    TokenizationReport,
    TokenizeConfig,
    encode_record,
    encode_records,
)
from kd_train.data.validate import JSON_SCHEMA_PATH, parse_line

__all__ = [
    "IGNORE_INDEX",
    "JSON_SCHEMA_PATH",
    "SCHEMA_VERSION",
    "SPAN_KINDS",
    "Batch",
    "DataValidationError",
    "Example",
    "KDRecord",
    "RecordWriter",
    "SequenceTooLongError",
    "Span",
    "TeacherTopK",
    "TokenizationError",
    "TokenizationReport",
    "TokenizeConfig",
    "ValidationReport",
    "collate",
    "encode_record",
    "encode_records",
    "iter_valid_records",
    "parse_line",
    "read_records",
    "validate_file",
    "write_records",
]
