"""Atomic writes: a reader sees the old file or directory or the new one, never half of one.

Files (:func:`atomic_open`): write to a temporary file in the same directory, flush and
``fsync`` it, then ``os.replace`` it over the target (atomic on POSIX and Windows) and
``fsync`` the directory so the rename survives a power cut.

Directories and artifacts (:func:`atomic_dir`, :func:`atomic_path`): everything is written
inside a hidden scratch directory next to the target (``.NAME.XXXXXXXX.tmp``); on success
every file in it is ``fsync``-ed and it is renamed over the target. If the block raises, the
scratch directory is removed and the target is untouched. A process killed while writing
leaves only the scratch directory, which the target's name never matches.

What is written gets the permissions of an ordinary ``open``: files ``0o666`` and
directories ``0o777``, less the process umask (``0o644`` and ``0o755`` under the usual
``022``), not the owner-only ``0o600`` of a ``tempfile.mkstemp`` file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; move it over ``path`` on success.

    If the block raises, the temporary file is removed and ``path`` is untouched.

    >>> import tempfile, pathlib
    >>> from kd_train.atomic import atomic_open
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_open(target) as f:
    ...     _ = f.write("done")
    >>> target.read_text()
    'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it owner-only (0o600)
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def current_umask() -> int:
    """The process umask (read without changing it for longer than two calls).

    >>> from kd_train.atomic import current_umask
    >>> 0 <= current_umask() <= 0o777
    True
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` whole.

    An existing ``target`` (directory or file) is replaced. If the block raises, the
    temporary directory is removed and ``target`` keeps its old content.

    >>> import tempfile, pathlib
    >>> from kd_train.atomic import atomic_dir
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "model"
    >>> with atomic_dir(target) as tmp:
    ...     _ = (tmp / "weights.bin").write_bytes(b"w")
    >>> sorted(p.name for p in target.iterdir())
    ['weights.bin']
    """
    with atomic_path(target) as tmp:
        tmp.mkdir()
        yield tmp


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a path (same name, not yet existing) to write ``target`` to; move it on success.

    The block writes a file or a directory at the yielded path. Anything else it writes next
    to that path (side files, such as ONNX external data) is moved next to ``target`` first,
    then the yielded path replaces ``target``. If the block raises, nothing is moved.

    Replacing a file by a file is one ``os.replace``. Replacing a directory (or a file by a
    directory) takes two renames: the old one moves into the scratch directory, then the
    new one into place; only a crash between those two leaves no ``target`` (the old copy is
    then inside ``.NAME.XXXXXXXX.tmp``).

    >>> import tempfile, pathlib
    >>> from kd_train.atomic import atomic_path
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "model.bin"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_bytes(b"weights")
    >>> out.read_bytes()
    b'weights'
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp = scratch / final.name
    try:
        yield tmp
        _fsync_tree(scratch)
        extras = sorted(p for p in scratch.iterdir() if p != tmp)
        replaced = Path(tempfile.mkdtemp(dir=scratch))  # where old entries go; removed below
        for extra in extras:  # side files first: the target's rename is the commit
            _replace(extra, final.parent / extra.name, aside=replaced / extra.name)
        _replace(tmp, final, aside=replaced / final.name)
        fsync_dir(final.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _replace(src: Path, dst: Path, aside: Path) -> None:
    """Move ``src`` over ``dst``; a ``dst`` that ``os.replace`` cannot overwrite goes ``aside``."""
    swap = src.is_dir() or (dst.is_dir() and not dst.is_symlink())
    if not swap or not os.path.lexists(dst):
        os.replace(src, dst)  # a file over a file, or onto a free name: one atomic step
        return
    os.replace(dst, aside)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(aside, dst)
        raise


def _fsync_tree(root: Path) -> None:
    """``fsync`` every regular file below ``root``, then every directory, deepest first."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(folder)


def fsync_dir(directory: str | Path) -> None:
    """``fsync`` a directory so that renames inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)
