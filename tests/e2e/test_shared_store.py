"""Two gateway processes on one PostgreSQL store act as one: a statement held on one is approved
through the other's admin API and released at once (LISTEN/NOTIFY), dev tokens minted against
the store verify on both, and each instance's admin API lists the sessions of both."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess

RULES = [{"name": "review-ddl", "match": {"sql": ["COMMENT", "ALTER"]}, "action": "review", "approvers": ["dba"],
          "timeout": "60s"}]


@pytest.fixture(scope="module")
def store_url(pg) -> str:
    name = "wgstore_shared"
    pg.psql(f"DROP DATABASE IF EXISTS {name}")
    pg.create_database(name, owner=pg.app_role)
    return pg.dsn(name, user=pg.app_role, password=pg.app_password, sslmode="disable")


@pytest.fixture(scope="module")
def pair(pg, store_url, tmp_path_factory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    workdir = tmp_path_factory.mktemp("shared")
    common = dict(targets=[pg_target("appdb", pg, allow_groups=["dev"])], rules=RULES, admin=True, store=store_url,
                  identity={"admin_groups": ["admins"]}, env={PW_ENV: pg.app_password})
    a = GatewayProcess(workdir / "a", **common)
    b = GatewayProcess(workdir / "b", **common)
    # started together: the schema is created once whoever comes first
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def api(g: GatewayProcess, token: str, method: str, path: str) -> httpx.Response:
    return httpx.request(method, g.admin_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_a_statement_held_on_one_is_released_by_the_other(pair, pg) -> None:
    a, b = pair
    alice = a.token("alice", ["dev"])  # minted with the store's key: b accepts it too
    bob = b.token("bob", ["dba", "admins"])
    waits = []
    for i in range(5):
        done: dict = {}
        conn = psycopg.connect(a.dsn("alice", alice, "appdb"), autocommit=True)

        def run() -> None:
            try:
                conn.execute(f"COMMENT ON TABLE items IS 'shared {i}'")
            except psycopg.Error as e:
                done["error"] = e
            done["at"] = time.monotonic()

        thread = threading.Thread(target=run)
        thread.start()
        request = None
        deadline = time.monotonic() + 10
        while request is None and time.monotonic() < deadline:
            # b sees the request a holds: they share the store
            found = [r for r in api(b, bob, "GET", "/api/approvals").json()["approvals"]
                     if r["command"] == f"COMMENT ON TABLE items IS 'shared {i}'"]
            request = found[0] if found else None
            time.sleep(0.02)
        assert request is not None, "b does not see a's request"
        assert request["instance"] != "" and request["requester"] == "alice"
        started = time.monotonic()
        assert api(b, bob, "POST", f"/api/approvals/{request['id']}/approve").status_code == 200
        thread.join(10)
        conn.close()
        assert "error" not in done, done
        waits.append(done["at"] - started)
    # released at once, not at the next poll of some interval
    assert statistics.median(waits) < 0.5, waits
    assert pg.psql("SELECT obj_description('items'::regclass)", dbname="app").strip() == "shared 4"


def test_denial_through_the_other_instance_and_tokens_work_on_both(pair) -> None:
    a, b = pair
    dave = b.token("dave", ["dev"])
    bob = a.token("bob", ["dba", "admins"])
    with psycopg.connect(b.dsn("dave", dave, "appdb"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    errors: dict = {}

    def run() -> None:
        try:
            with psycopg.connect(b.dsn("dave", dave, "appdb"), autocommit=True) as conn:
                conn.execute("ALTER TABLE items ADD COLUMN never int")
        except psycopg.Error as e:
            errors["e"] = e

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    request = None
    while request is None and time.monotonic() < deadline:
        found = [r for r in api(a, bob, "GET", "/api/approvals").json()["approvals"] if r["requester"] == "dave"]
        request = found[0] if found else None
        time.sleep(0.02)
    assert request is not None
    assert api(a, bob, "POST", f"/api/approvals/{request['id']}/deny").status_code == 200
    thread.join(10)
    assert errors["e"].sqlstate == "42501" and "denied by bob" in errors["e"].diag.message_primary


def test_each_instance_lists_the_sessions_of_both(pair) -> None:
    a, b = pair
    bob = a.token("bob", ["admins"])
    alice = a.token("alice", ["dev"])
    for g in (a, b):
        with psycopg.connect(g.dsn("alice", alice, "appdb"), autocommit=True) as conn:
            conn.execute("SELECT 1")
    deadline = time.monotonic() + 10
    instances: set[str] = set()
    while time.monotonic() < deadline and len(instances) < 2:
        sessions = api(a, bob, "GET", "/api/sessions?limit=1000").json()["sessions"]
        instances = {s["instance"] for s in sessions}
        time.sleep(0.2)
    assert len(instances) == 2, instances
    other = next(s for s in api(a, bob, "GET", "/api/sessions?limit=1000").json()["sessions"]
                 if s["instance"].endswith(str(b.proc.pid)))
    assert api(a, bob, "GET", f"/api/sessions/{other['id']}").json()["id"] == other["id"]
