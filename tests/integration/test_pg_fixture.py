"""The private PostgreSQL server outlives the pruning of pytest's temp dirs.

A nested pytest session (the qa tests start some) prunes old numbered temp dirs, which hold
the data directory path pytest-postgresql asked for. The server must keep running and stop
cleanly (pg_ctl_unprivileged.sh keeps the real data directory elsewhere).
"""

import shutil
import time

import psycopg
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_server_survives_its_temp_dir_being_pruned(pg_url, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    pruned = [p for p in base.iterdir() if p.name.startswith("pytest-postgresql")]
    assert pruned, "the server's temp dir was not where pytest-postgresql puts it"
    for path in pruned:
        shutil.rmtree(path)
    time.sleep(70)  # the postmaster rechecks its data directory lock file about once a minute
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
