r"""Read a held-out evaluation set: JSONL in the KD record format, one record per line.

Rows are read and validated by :func:`kd_train.data.jsonl.read_records` (strict mode: the
first bad row stops the read), so an eval set obeys exactly the rules of a training set.
Its :class:`~kd_train.data.errors.DataValidationError` (``file:line: field: reason``) is
re-raised as :class:`~kd_eval.errors.EvalDataError` with the same message; an empty set is
an error too, since a metric over zero examples means nothing.

>>> import tempfile, pathlib
>>> from kd_eval.loading.data import read_eval_set
>>> p = pathlib.Path(tempfile.mkdtemp()) / "eval.jsonl"
>>> _ = p.write_text('{"schema_version": 1, "id": "a", "prompt": "Q: ", "completion": "Yes."}\n')
>>> [r.completion for r in read_eval_set(p)]
['Yes.']
"""

from __future__ import annotations

from pathlib import Path

from kd_train.data.errors import DataValidationError
from kd_train.data.jsonl import read_records
from kd_train.data.schema import KDRecord

from kd_eval.errors import EvalDataError


def read_eval_set(path: str | Path) -> list[KDRecord]:
    """Read and validate every record of the JSONL file ``path``.

    Raises:
        EvalDataError: the file is missing or empty, or a row is malformed (``file:line``).
    """
    source = Path(path)
    if not source.is_file():
        raise EvalDataError(f"eval set {source} does not exist; pass a JSONL file of KD records")
    try:
        records = list(read_records(source))
    except DataValidationError as exc:
        raise EvalDataError(f"{exc}; fix or remove that row of the eval set") from exc
    if not records:
        raise EvalDataError(f"eval set {source} is empty; it needs at least one record")
    return records
