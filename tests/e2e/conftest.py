"""Fixtures for end-to-end tests: the gateway as a subprocess in front of a throwaway PostgreSQL."""

from __future__ import annotations

import pytest

from gateway.sshserver import start_sshd
from tests.e2e.gateway_process import GatewayProcess

PW_ENV = "WG_TEST_APP_PASSWORD"


def pg_target(name: str, server, *, tls: str = "require", allow_groups=("dev",), user: str = "app",
              database: str = "app") -> dict:
    return {"name": name, "protocol": "postgres", "address": f"127.0.0.1:{server.port}", "database": database,
            "user": user, "password_env": PW_ENV, "tls": tls, "allow_groups": list(allow_groups)}


@pytest.fixture(scope="session")
def gw(pg, tmp_path_factory):
    g = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        targets=[pg_target("appdb", pg), pg_target("plain", pg, tls="disable"),
                 pg_target("dba-only", pg, allow_groups=["dba"]), pg_target("bench", pg, tls="disable")],
        rules=[{"name": "no-destructive-sql", "targets": ["appdb", "plain"],
                "match": {"sql": ["DROP", "TRUNCATE"]}, "action": "deny"},
               {"name": "no-role-changes", "match": {"sql": ["ALTER ROLE", "CREATE ROLE"]}, "action": "deny",
                "message": "roles are managed by the platform team"}],
        env={PW_ENV: pg.app_password},
    ).start()
    yield g
    g.stop()


@pytest.fixture(scope="session")
def alice(gw) -> str:
    return gw.token("alice", ["dev"])


@pytest.fixture(scope="session")
def dsn(gw, alice) -> str:
    return gw.dsn("alice", alice, "appdb")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """Debian's sshd on a loopback port (gateway/sshserver.py), one per test module."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
