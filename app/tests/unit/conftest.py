"""Fixtures shared by the service's unit tests: the throwaway PostgreSQL (:mod:`pg_server`),
started once per run by the first test that asks for it, so the other tests never pay for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg_server import PgServer, database_name, start, stop


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start()
    yield server
    stop(server)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A new database as the postgresql and citus roles leave it: not migrated yet."""
    name = pg_server.prepare(database_name("sluice_test"))
    yield name
    pg_server.drop(name)
