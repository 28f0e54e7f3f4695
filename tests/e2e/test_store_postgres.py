"""The shared PostgreSQL store (gateway/store.py) against a real throwaway server.

The Store API scenarios of tests/unit/test_store.py run here too; on top: two stores on one
database (NOTIFY crossing instances, one migration for two concurrent starts, one dev key),
the sessions mirror from the recorder's thread, lost connections, and connection errors.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.errors import WiregateError
from gateway.identity import Authenticator, issue_dev_token
from gateway.pgserver import free_port, sql_literal
from gateway.store import SCHEMA_VERSION, PostgresStore, Store, dev_signing_key_pem_for, open_store
from recorder.index import SessionRow
from tests.unit.test_store import (
    NOW,
    SCENARIOS,
    make_cfg,
    record,
    scenario_decide_race,
    scenario_dev_key,
    scenario_sessions,
    session,
)


def new_database(pg) -> str:
    name = f"store_{secrets.token_hex(4)}"
    pg.create_database(name)
    return name


@pytest.fixture(scope="module")
def db(pg) -> str:
    """A fresh database for this module."""
    return new_database(pg)


@pytest.fixture
def url(pg, db) -> str:
    # each test starts from empty tables (the schema stays: it is created once, by the first store)
    if pg.psql("SELECT to_regclass('approvals') IS NOT NULL", dbname=db).strip() == "t":
        pg.psql("TRUNCATE approvals, grants, sessions, dev_keys", dbname=db)
    return pg.dsn(db)


def cfg_for(tmp_path: Path, url: str, state: str = "state") -> Config:
    return make_cfg(tmp_path, state=state, store=url)


async def opened(cfg: Config, instance: str = "gw-1") -> PostgresStore:
    store = open_store(cfg, instance=instance)
    assert isinstance(store, PostgresStore) and store.kind == "postgresql"
    await store.open()
    return store


def run_with(cfg: Config, body: Callable[[PostgresStore], Awaitable[None]], instance: str = "gw-1") -> None:
    async def main() -> None:
        store = await opened(cfg, instance)
        try:
            await body(store)
        finally:
            await store.close()
    asyncio.run(main())


def terminate(pg, db: str, application_name: str) -> int:
    out = pg.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                  f"WHERE datname = {sql_literal(db)} AND application_name = {sql_literal(application_name)}")
    return int(out.strip())


# ---------------------------------------------------------------- the API, as for SQLite

@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__.removeprefix("scenario_"))
def test_postgres_api(tmp_path, url, scenario):
    run_with(cfg_for(tmp_path, url), scenario)


def test_decide_race_across_two_instances(tmp_path, url):
    async def main() -> None:
        a = await opened(cfg_for(tmp_path, url), "gw-a")
        b = await opened(cfg_for(tmp_path, url, "state-b"), "gw-b")
        try:
            await scenario_decide_race(a, b)
        finally:
            await a.close()
            await b.close()
    asyncio.run(main())


def test_sessions_mirror_from_a_thread(tmp_path, url):
    state = tmp_path / "state"

    async def body(store: PostgresStore) -> None:
        mirror = store.session_mirror()
        assert mirror is not None

        async def write(rows: Sequence[SessionRow]) -> None:
            # the recorder's writer thread calls it: a thread that is not the event loop's
            errors: list[BaseException] = []

            def writer() -> None:
                try:
                    mirror(rows)
                except BaseException as e:  # pragma: no cover - the assertion below reports it
                    errors.append(e)
            thread = threading.Thread(target=writer)
            thread.start()
            await asyncio.to_thread(thread.join)
            assert errors == []

        await scenario_sessions(store, write, state)

    run_with(cfg_for(tmp_path, url), body)


# ---------------------------------------------------------------- several instances

def test_publish_reaches_the_other_instance(tmp_path, url):
    async def main() -> None:
        a = await opened(cfg_for(tmp_path, url), "gw-a")
        b = await opened(cfg_for(tmp_path, url, "state-b"), "gw-b")
        try:
            got_a: list[str] = []
            got_b: list[str] = []
            arrived = asyncio.Event()

            def on_b(approval_id: str) -> None:
                got_b.append(approval_id)
                arrived.set()
            a.subscribe(got_a.append)
            b.subscribe(on_b)
            rec = record("ap-cross0000001", instance="gw-b")
            await b.create_approval(rec)
            await a.decide_approval(rec.id, status="approved", decided_by="bob", decided_at=NOW)
            started = time.monotonic()
            await a.publish(rec.id)
            await asyncio.wait_for(arrived.wait(), 1.0)
            assert time.monotonic() - started < 1.0
            assert got_b == [rec.id]
            assert (await b.get_approval(rec.id)).status == "approved"
            # the publisher's own subscribers hear it too (it may hold the command itself)
            for _ in range(100):
                if got_a:
                    break
                await asyncio.sleep(0.01)
            assert got_a == [rec.id]
        finally:
            await a.close()
            await b.close()
    asyncio.run(main())


def test_two_instances_starting_at_once_migrate_once(tmp_path, pg, caplog):
    fresh = pg.dsn(new_database(pg))

    async def main() -> None:
        a = PostgresStore(cfg_for(tmp_path, fresh), instance="gw-a")
        b = PostgresStore(cfg_for(tmp_path, fresh, "state-b"), instance="gw-b")
        await asyncio.gather(a.open(), b.open())
        try:
            await a.create_approval(record("ap-both00000001"))
            assert (await b.get_approval("ap-both00000001")).id == "ap-both00000001"
        finally:
            await a.close()
            await b.close()

    with caplog.at_level(logging.INFO, logger="wiregate.store"):
        asyncio.run(main())
    migrations = [r for r in caplog.records if "schema 0 -> 1" in r.getMessage()]
    assert len(migrations) == 1
    db = fresh.rsplit("/", 1)[1]
    assert pg.psql("SELECT key, value FROM meta", dbname=db).strip() == f"gateway.store|{SCHEMA_VERSION}"


def test_newer_schema_is_refused(tmp_path, pg):
    name = new_database(pg)
    fresh = pg.dsn(name)
    run_with(cfg_for(tmp_path, fresh), lambda s: s.list_approvals())
    pg.psql(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'gateway.store'", dbname=name)
    with pytest.raises(WiregateError, match=rf"has schema {SCHEMA_VERSION + 1}, newer than this wiregate's "
                                            rf"\({SCHEMA_VERSION}\): upgrade wiregate") as e:
        asyncio.run(PostgresStore(cfg_for(tmp_path, fresh), instance="x").open())
    assert pg.password not in str(e.value)
    with pytest.raises(WiregateError, match="newer than this wiregate's"):
        dev_signing_key_pem_for(cfg_for(tmp_path, fresh))

    async def failed_open_stays_closed() -> None:
        store = PostgresStore(cfg_for(tmp_path, fresh), instance="x")
        with pytest.raises(WiregateError, match="newer"):
            await store.open()
        with pytest.raises(WiregateError, match="is not open"):
            await store.list_approvals()
    asyncio.run(failed_open_stays_closed())


def test_one_dev_key_for_every_instance(tmp_path, url):
    cfg_a = cfg_for(tmp_path, url)
    cfg_b = cfg_for(tmp_path, url, "state-b")  # another machine: another state dir, the same store

    async def main() -> None:
        a = await opened(cfg_a, "gw-a")
        b = await opened(cfg_b, "gw-b")
        try:
            keys = await asyncio.gather(*(asyncio.to_thread(s.dev_signing_key_pem) for s in (a, b, a, b)))
            assert len(set(keys)) == 1
            await scenario_dev_key(a, cfg_a)
            # minted against one instance's config, verified by another's
            token = await asyncio.to_thread(issue_dev_token, cfg_a, "alice", ["dev", "ops"], 300)
            ident = await Authenticator(cfg_b).authenticate(token)
            assert (ident.name, ident.groups, ident.method) == ("alice", ("dev", "ops"), "dev")
            assert (await Authenticator(cfg_b, store=b).authenticate(token)).name == "alice"
            # a gateway on its own SQLite store has another key, and says where to look
            alone = make_cfg(tmp_path, state="alone")
            with pytest.raises(WiregateError, match=r"another gateway's key \(another state_dir\)"):
                await Authenticator(alone).authenticate(token)
        finally:
            await a.close()
            await b.close()
    asyncio.run(main())
    assert not (tmp_path / "state" / "keys").exists()  # the key lives in the store, not in a file


def test_cli_mints_before_any_gateway_started(tmp_path, pg):
    """`wiregate token issue` against a store no gateway has touched yet creates the schema itself."""
    cfg = cfg_for(tmp_path, pg.dsn(new_database(pg)))
    token = issue_dev_token(cfg, "alice", [], 60)

    async def body(store: PostgresStore) -> None:
        assert (await Authenticator(cfg, store=store).authenticate(token)).name == "alice"
    run_with(cfg, body)


# ---------------------------------------------------------------- lost connections

def test_lost_listen_connection_comes_back_with_a_star(tmp_path, pg, db, url):
    async def body(store: PostgresStore) -> None:
        seen: list[str] = []
        changed = asyncio.Event()

        def on(approval_id: str) -> None:
            seen.append(approval_id)
            changed.set()
        store.subscribe(on)
        assert await asyncio.to_thread(terminate, pg, db, "wiregate listen gw-listen") == 1
        await asyncio.wait_for(changed.wait(), 5)
        assert seen == ["*"]  # subscribers re-read what they hold
        changed.clear()
        await store.publish("ap-after0000001")
        await asyncio.wait_for(changed.wait(), 1)
        assert seen == ["*", "ap-after0000001"]

    run_with(cfg_for(tmp_path, url), body, instance="gw-listen")


def test_lost_query_connection(tmp_path, pg, db, url):
    async def body(store: PostgresStore) -> None:
        rec = record("ap-lost00000001")
        await store.create_approval(rec)
        # a read on a connection that broke is retried on a new one
        assert await asyncio.to_thread(terminate, pg, db, "wiregate query gw-lost") == 1
        assert await store.get_approval(rec.id) == rec
        # a write is not: it may have committed before the connection broke
        assert await asyncio.to_thread(terminate, pg, db, "wiregate query gw-lost") == 1
        with pytest.raises(WiregateError, match="the connection was lost"):
            await store.decide_approval(rec.id, status="approved", decided_by="bob", decided_at=NOW)
        # ... and the next call has a connection again
        assert (await store.decide_approval(rec.id, status="approved", decided_by="bob", decided_at=NOW)).status \
            == "approved"

    run_with(cfg_for(tmp_path, url), body, instance="gw-lost")


def test_mirror_never_raises_into_the_writer(tmp_path, url, caplog):
    """A store that cannot take the rows: the batch is dropped, logged once, and the writer goes on."""
    async def body(store: PostgresStore) -> None:
        mirror = store.session_mirror()
        broken = session("s-bad", tmp_path)
        broken.groups = (object(),)  # cannot be encoded: the mirror fails
        with caplog.at_level(logging.WARNING, logger="wiregate.store"):
            await asyncio.to_thread(mirror, [broken])
            await asyncio.to_thread(mirror, [session("s-dropped", tmp_path)])  # within the pause: dropped
        warnings = [r for r in caplog.records if "cannot mirror the sessions index" in r.getMessage()]
        assert len(warnings) == 1
        assert await store.list_sessions() == []

    run_with(cfg_for(tmp_path, url), body)


def test_mirror_to_an_unreachable_store_is_quick_and_quiet(tmp_path):
    store = PostgresStore(cfg_for(tmp_path, f"postgresql://wiregate:pw@127.0.0.1:{free_port()}/x"), instance="m")
    mirror = store.session_mirror()
    started = time.monotonic()
    mirror([session("s-1", tmp_path)])
    mirror([session("s-2", tmp_path)])
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- connection errors

@pytest.mark.parametrize("make_url, expected", [
    (lambda pg: pg.dsn("postgres", password="Wr0ng-Secret-42"), "password authentication failed"),
    (lambda pg: f"postgresql://postgres:Wr0ng-Secret-42@127.0.0.1:{free_port()}/postgres", "refused"),
    (lambda pg: "postgresql://postgres:Wr0ng%zzSecret-42@127.0.0.1/postgres", "not a usable PostgreSQL URL"),
    (lambda pg: "postgresql://postgres@127.0.0.1/postgres?password=Wr0ng-Secret-42&bogus=1",
     "not a usable PostgreSQL URL"),
], ids=["wrong-password", "unreachable", "bad-escape", "bad-option"])
def test_open_errors_are_one_line_without_the_password(tmp_path, pg, make_url, expected):
    cfg = cfg_for(tmp_path, make_url(pg))
    with pytest.raises(WiregateError) as e:
        asyncio.run(PostgresStore(cfg, instance="x").open())
    message = str(e.value)
    assert expected in message
    assert "\n" not in message
    assert "Wr0ng" not in message and "Secret-42" not in message
    with pytest.raises(WiregateError) as e:
        issue_dev_token(cfg, "alice", [], 60)
    assert "Secret-42" not in str(e.value) and "\n" not in str(e.value)


def test_store_not_open(tmp_path, url):
    store: Store = PostgresStore(cfg_for(tmp_path, url), instance="x")
    with pytest.raises(WiregateError, match="is not open"):
        asyncio.run(store.list_approvals())
