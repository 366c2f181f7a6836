"""Teacher sources behind one protocol: top-k log-probs for given token ids."""

from kd_train.teachers.base import Teacher, TopK
from kd_train.teachers.cached import CachedTeacher, TopKWithTail
from kd_train.teachers.fingerprint import (
    dataset_fingerprint,
    records_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from kd_train.teachers.hf import HFTeacher
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig, HTTPTeacherError
from kd_train.teachers.retry import RetryPolicy

__all__ = [
    "CachedTeacher",
    "HFTeacher",
    "HTTPTeacher",
    "HTTPTeacherConfig",
    "HTTPTeacherError",
    "RetryPolicy",
    "Teacher",
    "TopK",
    "TopKWithTail",
    "dataset_fingerprint",
    "records_fingerprint",
    "tokenizer_fingerprint",
    "weights_fingerprint",
]
