"""Shared fixtures: throwaway PostgreSQL servers (gateway/pgserver.py).

``pg``       the session's default server: scram-sha-256, SSL on, with a role
             ``app`` (password in ``pg.app_password``; ``pg.app_dsn(sslmode=...)``) owning a database
             ``app`` that holds ``customers`` (50 rows of fake PII) and
             ``items`` (1000 rows, see ``gateway.pgserver.expected_item``).
``make_pg``  ``make_pg(auth="md5", ssl=True)``: a server seeded the same way
             with another host auth method (scram-sha-256, md5, password,
             trust); one per (auth, ssl) for the whole session.

Servers start lazily, on first use, and stop at the end of the session. When
the PostgreSQL binaries are missing the fixtures fail with the install hint;
nothing is skipped.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from gateway.pgserver import ThrowawayPostgres, customers_sql, items_sql

APP_ROLE = "app"
APP_DB = "app"
CUSTOMER_ROWS = 50
ITEM_ROWS = 1000


class SeededPostgres(ThrowawayPostgres):
    """A ThrowawayPostgres with the ``app`` role and database seeded."""

    app_role = APP_ROLE
    app_db = APP_DB
    app_password: str = ""

    def app_dsn(self, **params: str) -> str:
        """URL for the app role on the app database (``sslmode=...`` etc. as keywords)."""
        return self.dsn(self.app_db, user=self.app_role, password=self.app_password, **params)


def _seeded(auth: str, ssl: bool) -> SeededPostgres:
    server = SeededPostgres(auth=auth, ssl=ssl).start()
    try:
        server.app_password = secrets.token_urlsafe(12)
        server.create_role(APP_ROLE, server.app_password)
        server.create_database(APP_DB, owner=APP_ROLE)
        server.psql(customers_sql(CUSTOMER_ROWS, owner=APP_ROLE) + items_sql(ITEM_ROWS, owner=APP_ROLE), dbname=APP_DB)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def make_pg() -> Iterator[Callable[..., SeededPostgres]]:
    servers: dict[tuple[str, bool], SeededPostgres] = {}
    failures: dict[tuple[str, bool], BaseException] = {}

    def get(auth: str = "scram-sha-256", ssl: bool = True) -> SeededPostgres:
        key = (auth, ssl)
        if key in failures:  # do not retry a failed start in every test
            raise failures[key]
        if key not in servers:
            try:
                servers[key] = _seeded(auth, ssl)
            except Exception as e:
                failures[key] = e
                raise
        return servers[key]

    try:
        yield get
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def pg(make_pg: Callable[..., SeededPostgres]) -> SeededPostgres:
    return make_pg("scram-sha-256", True)
