"""Resumable generation of KD datasets from an HTTP teacher (``kd-train generate``)."""

from kd_train.generate.output import Prompt, RecordAppender, read_prompts, recover_output
from kd_train.generate.run import GenerateSummary, generate_dataset, to_record

__all__ = [
    "GenerateSummary",
    "Prompt",
    "RecordAppender",
    "generate_dataset",
    "read_prompts",
    "recover_output",
    "to_record",
]
