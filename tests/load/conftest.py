"""The load tests reuse the integration fixtures (private PostgreSQL server, ``pg_url``)."""

from tests.integration.conftest import pg_url, postgresql_server  # noqa: F401
