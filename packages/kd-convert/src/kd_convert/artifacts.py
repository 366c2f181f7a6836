"""Write export artifacts atomically: a reader sees the old artifact or the new one.

Exporters write files (``model.onnx``) or directories (``model.mlpackage``). Both are written
to a temporary sibling and renamed over the target, like :mod:`kd_train.atomic` does for
plain files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kd_train.atomic import fsync_dir


@contextlib.contextmanager
def atomic_artifact(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same name) to write ``target`` to; rename it on success.

    Anything else written into the temporary directory is moved next to ``target`` too.

    >>> import tempfile, pathlib
    >>> from kd_convert.artifacts import atomic_artifact
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "model.bin"
    >>> with atomic_artifact(out) as tmp:
    ...     _ = tmp.write_bytes(b"weights")
    >>> out.read_bytes()
    b'weights'
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp = scratch / final.name
    try:
        yield tmp
        # Side files an exporter writes next to its artifact (ONNX external data) go first.
        for extra in sorted(p for p in scratch.iterdir() if p != tmp):
            os.replace(extra, final.parent / extra.name)
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
