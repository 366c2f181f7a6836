"""Teacher kinds behind one protocol: a batch in, one ``TeacherOutput`` out.

``hf`` (``HFTeacher``, a local ``transformers`` model), ``cached`` (``CachedTeacher``, top-k
made once by ``kd-train cache-logits``), ``records`` (``RecordsTeacher``, the top-k
``kd-train generate`` stored in the dataset) and ``http`` (``HTTPTeacher``, prompt
log-probs from an OpenAI-compatible endpoint); see :mod:`kd_train.teachers.base`.
"""

from kd_train.teachers.base import Teacher, TeacherOutput, TeacherOutputError
from kd_train.teachers.cached import CachedTeacher
from kd_train.teachers.fingerprint import (
    dataset_fingerprint,
    records_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from kd_train.teachers.hf import HFTeacher
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig, HTTPTeacherError
from kd_train.teachers.records import RecordsTeacher
from kd_train.teachers.retry import RetryPolicy

__all__ = [
    "CachedTeacher",
    "HFTeacher",
    "HTTPTeacher",
    "HTTPTeacherConfig",
    "HTTPTeacherError",
    "RecordsTeacher",
    "RetryPolicy",
    "Teacher",
    "TeacherOutput",
    "TeacherOutputError",
    "dataset_fingerprint",
    "records_fingerprint",
    "tokenizer_fingerprint",
    "weights_fingerprint",
]
