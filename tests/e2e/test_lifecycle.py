"""`wiregate serve` signals, on a real process: SIGHUP reloads rules and targets without dropping
an open session (a rule change applies to its next statement); SIGTERM stops accepting, lets
sessions finish within gateway.shutdown_grace, then closes them (57P01) and exits 0."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import psycopg
import pytest

from gateway.demo import render_config
from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess


def _rewrite(g: GatewayProcess, rules: list[dict], targets: list[dict]) -> None:
    text = g.config_path.read_text()
    head = text.split("[[targets]]", 1)[0]
    g.config_path.write_text(head + render_config({}, {"targets": targets, "rules": rules}))


def _wait_log(g: GatewayProcess, needle: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while needle not in g.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not in the gateway's log:\n{g.log()[-2000:]}")
        time.sleep(0.05)


def test_sighup_applies_a_rule_change_to_an_open_session(pg, tmp_path) -> None:
    targets = [pg_target("appdb", pg)]
    g = GatewayProcess(tmp_path / "gw", targets=targets, rules=[], admin=True,
                       identity={"admin_groups": ["admins"]}, env={PW_ENV: pg.app_password}).start()
    try:
        alice = g.token("alice", ["dev"])
        conn = psycopg.connect(g.dsn("alice", alice, "appdb"), autocommit=True)
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] > 0
        # a new deny rule and a new target
        _rewrite(g, [{"name": "no-items", "match": {"tables": ["items"]}, "action": "deny"}],
                 targets + [pg_target("second", pg)])
        g.signal(signal.SIGHUP)
        _wait_log(g, "SIGHUP: reloaded")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='blocked by rule "no-items"'):
            conn.execute("SELECT count(*) FROM items")
        # the same session goes on
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] > 0
        with psycopg.connect(g.dsn("alice", alice, "second"), autocommit=True) as other:
            assert other.execute("SELECT 1").fetchone() == (1,)
        # a config with errors changes nothing
        g.config_path.write_text(g.config_path.read_text() + "\n[bogus]\nkey = 1\n")
        g.signal(signal.SIGHUP)
        _wait_log(g, "not reloaded")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM items")
        assert conn.execute("SELECT 2").fetchone() == (2,)
        conn.close()
        assert g.alive()
    finally:
        g.stop()


def test_sigterm_drains_then_closes_and_exits_zero(pg, tmp_path) -> None:
    g = GatewayProcess(tmp_path / "gw", targets=[pg_target("appdb", pg)], admin=True,
                       identity={"admin_groups": ["admins"]}, gateway={"shutdown_grace": "3s"},
                       env={PW_ENV: pg.app_password}).start()
    alice = g.token("alice", ["dev"])
    busy = psycopg.connect(g.dsn("alice", alice, "appdb"), autocommit=True)
    idle = psycopg.connect(g.dsn("alice", alice, "appdb"), autocommit=True)
    outcome: dict = {}

    def long_statement() -> None:
        try:
            outcome["rows"] = busy.execute("SELECT pg_sleep(1), 42").fetchone()
        except psycopg.Error as e:
            outcome["error"] = e

    thread = threading.Thread(target=long_statement)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    g.signal(signal.SIGTERM)
    # new connections are refused at once; the health check says it is draining
    deadline = time.monotonic() + 2
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            socket.create_connection((g.host, g.port), timeout=0.5).close()
            time.sleep(0.05)
        except OSError:
            refused = True
    assert refused, "the postgres port still accepts connections during the drain"
    # the statement in flight finishes within the grace period
    thread.join(5)
    assert outcome.get("rows", (None, None))[1] == 42, outcome
    # the idle session is closed at the end of the grace period with 57P01
    time.sleep(max(0.0, started + 3.5 - time.monotonic()))
    with pytest.raises(psycopg.OperationalError) as closed:
        idle.execute("SELECT 1")
    assert closed.value.sqlstate == "57P01" or "shutting down" in str(closed.value), closed.value
    assert g.proc.wait(15) == 0
    elapsed = time.monotonic() - started
    assert 2.5 < elapsed < 12, elapsed
    busy.close()
    idle.close()


def test_sigterm_returns_early_when_sessions_end(pg, tmp_path) -> None:
    g = GatewayProcess(tmp_path / "gw", targets=[pg_target("appdb", pg)], admin=True,
                       identity={"admin_groups": ["admins"]}, gateway={"shutdown_grace": "30s"},
                       env={PW_ENV: pg.app_password}).start()
    alice = g.token("alice", ["dev"])
    conn = psycopg.connect(g.dsn("alice", alice, "appdb"), autocommit=True)
    started = time.monotonic()
    g.signal(signal.SIGTERM)
    time.sleep(0.5)
    health = httpx.get(g.admin_url + "/healthz", timeout=5)
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert conn.execute("SELECT 1").fetchone() == (1,)  # still served during the grace period
    conn.close()
    assert g.proc.wait(15) == 0
    assert time.monotonic() - started < 10
