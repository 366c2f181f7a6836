"""Fixtures for tests, benchmarks and load scenarios: never imported by product code.

Install them with ``pip install kd-train[testing]``. They are built from the product
(``kd_train.testing`` imports :mod:`kd_train`, never the reverse: ``tests/test_import_rules.py``
checks it). Every name below is importable from ``kd_train.testing`` itself.

* :mod:`kd_train.testing.models`: tiny random GQA Llamas and their tokenizer
  (:func:`~kd_train.testing.models.save_tiny_llama`,
  :func:`~kd_train.testing.models.tiny_llama_config`, and ``train_tiny_tokenizer``, which
  is :func:`kd_train.models.train_tokenizer`), built by the product's :mod:`kd_train.models`;
* :mod:`kd_train.testing.records`: synthetic KD records
  (:func:`~kd_train.testing.records.synthetic_record`);
* :mod:`kd_train.testing.teachers`: the real HF teacher interrupted at a chosen forward
  pass (:class:`~kd_train.testing.teachers.InterruptedTeacher`);
* :mod:`kd_train.testing.server`: a loopback OpenAI-compatible teacher server with fault
  injection (:class:`~kd_train.testing.server.loopback.LoopbackTeacherServer`,
  :class:`~kd_train.testing.server.faults.FaultPlan`).
"""

from kd_train.models import DEFAULT_CORPUS, SPECIAL_TOKENS
from kd_train.testing.models import save_tiny_llama, tiny_llama_config, train_tiny_tokenizer
from kd_train.testing.records import SYNTHETIC_WORDS, synthetic_record
from kd_train.testing.server import (
    FAULTS,
    GENERATE_DEFAULTS,
    FaultPlan,
    LoopbackTeacherServer,
    generate_argv,
    write_prompts,
)
from kd_train.testing.teachers import InterruptedTeacher

__all__ = [
    "DEFAULT_CORPUS",
    "FAULTS",
    "GENERATE_DEFAULTS",
    "SPECIAL_TOKENS",
    "SYNTHETIC_WORDS",
    "FaultPlan",
    "InterruptedTeacher",
    "LoopbackTeacherServer",
    "generate_argv",
    "save_tiny_llama",
    "synthetic_record",
    "tiny_llama_config",
    "train_tiny_tokenizer",
    "write_prompts",
]
