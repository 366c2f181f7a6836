"""Fixtures of the integration tests: a private PostgreSQL server and the loopback teacher.

PostgreSQL: pytest-postgresql's ``postgresql_proc`` starts a throw-away server from the
machine's ``pg_ctl`` (found on ``PATH``, else under ``/usr/lib/postgresql/*/bin``; ``.ci/run``
installs Debian's ``postgresql`` when neither exists). ``initdb`` refuses to run as root,
and CI containers run as root: then ``pg_ctl`` is wrapped by ``pg_ctl_unprivileged.sh``,
which runs it as the ``postgres`` user (created by the Debian package; ``nobody`` if
absent). A missing ``pg_ctl`` fails these tests; they are never skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_postgresql import factories

HERE = Path(__file__).resolve().parent


def find_pg_ctl() -> str:
    """Return the path of the machine's ``pg_ctl`` (PATH first, then Debian's layout)."""
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            "pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin: install PostgreSQL "
            "(apt-get install postgresql); .ci/run does this in CI"
        )
    return candidates[-1]


def _pg_executable() -> str:
    try:
        real = find_pg_ctl()
    except RuntimeError:
        return "pg_ctl"  # the fixture fails with pytest-postgresql's message; never skipped
    if os.geteuid() != 0:
        return real
    user = "postgres"
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"
    os.environ["KD_TEST_PG_CTL"] = real
    os.environ["KD_TEST_PG_USER"] = user
    return str(HERE / "pg_ctl_unprivileged.sh")


postgresql_server = factories.postgresql_proc(
    executable=_pg_executable(), port=None, unixsocketdir=tempfile.gettempdir()
)


@pytest.fixture
def pg_url(postgresql_server) -> Iterator[str]:
    """A fresh, empty database on the private server, as a ``postgresql://`` URL."""
    import psycopg

    proc = postgresql_server
    name = f"kd_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://{proc.user}@{proc.host}:{proc.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://{proc.user}@{proc.host}:{proc.port}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def teacher_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real teacher model + tokenizer saved to disk (served by the loopback server)."""
    from kd_train.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("http-teacher"), seed=3)
