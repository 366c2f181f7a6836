"""The one error type of KD dataset problems: :class:`DataValidationError`.

Every problem found in a dataset file, from bytes that are not UTF-8 to a span that runs
past the end of the completion, is reported as a :class:`DataValidationError` carrying the
file, the 1-based line, the field (a JSON path such as ``spans[1].end``, or ``None`` when
the whole line is at fault), a short stable ``code`` for summaries, and the reason.
"""

from __future__ import annotations

from pathlib import Path

from kd_train.errors import KDTrainError


class DataValidationError(KDTrainError):
    """A row of a KD dataset that breaks the record schema.

    The message reads ``FILE:LINE: FIELD: REASON`` (without ``FIELD:`` when the whole line
    is at fault), and the reason says what was expected.

    Attributes:
        path: the dataset file (or a label such as ``"<memory>"``).
        line: 1-based line number in that file.
        field: JSON path of the offending field (``"teacher_topk.logprobs[3][0]"``), or
            ``None`` for whole-line problems (bad JSON, blank line, bytes not UTF-8).
        code: short stable identifier of the kind of problem (``"span_overlap"``), used to
            count rejections in a :class:`~kd_train.data.quarantine.ValidationReport`.
        reason: what was wrong and what was expected.

    >>> from kd_train.data.errors import DataValidationError
    >>> err = DataValidationError("d.jsonl", 7, "spans[0].end", "too_long", "40 > 12")
    >>> str(err)
    'd.jsonl:7: spans[0].end: 40 > 12'
    >>> (err.line, err.field, err.code)
    (7, 'spans[0].end', 'too_long')
    """

    def __init__(
        self, path: str | Path, line: int, field: str | None, code: str, reason: str
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.code = code
        self.reason = reason
        where = f"{self.path}:{line}: " + (f"{field}: " if field else "")
        super().__init__(where + reason)

    def __reduce__(self) -> tuple[type[DataValidationError], tuple[str, int, str | None, str, str]]:
        # Keep the attributes when the error crosses a process boundary (pickling).
        return (type(self), (self.path, self.line, self.field, self.code, self.reason))
