"""A private, throw-away PostgreSQL server for the load scenarios (outside pytest).

``initdb`` + ``pg_ctl`` from the machine (``PATH``, else ``/usr/lib/postgresql/*/bin``),
trust authentication, listening on ``127.0.0.1`` only, data in a temp directory that is
removed on exit. As root (CI containers) the server runs as the ``postgres`` user through
``runuser``, because PostgreSQL refuses to run as root. Inside pytest, use the
``pg_url`` fixture of ``tests/integration/conftest.py`` instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``pg_ctl``)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return candidates[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """Start a server; yield a ``postgresql://`` URL of an empty database; stop and clean up."""
    root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if root else []
    data = Path(tempfile.mkdtemp(prefix="kd-load-pg-"))
    port = _free_port()
    if root:
        shutil.chown(data, "postgres")
    run = [*prefix, pg_bin("pg_ctl"), "-D", str(data / "db")]
    try:
        subprocess.run(
            [*prefix, pg_bin("initdb"), "-D", str(data / "db"), "-U", "kd", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off"
        subprocess.run(
            [*run, "-o", options, "-l", str(data / "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )
        try:
            yield f"postgresql://kd@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*run, "-m", "immediate", "-w", "stop"], capture_output=True, check=False
            )
    finally:
        shutil.rmtree(data, ignore_errors=True)
