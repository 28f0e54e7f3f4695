"""The embedded SQLite store (gateway/store.py), on real files next to a real recorder index.

The ``scenario_*`` coroutines test the Store API whatever the backend; the PostgreSQL tests
(tests/e2e/test_store_postgres.py) run the same ones against a real server.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from gateway.approval import ApprovalRecord, Grant
from gateway.config import Config, GatewaySection, IdentitySection
from gateway.errors import WiregateError
from gateway.identity import Authenticator, dev_key_path, issue_dev_token
from gateway.store import (
    APPROVAL_COLUMNS,
    SCHEMA_VERSION,
    PostgresStore,
    SqliteStore,
    Store,
    dev_signing_key_pem_for,
    open_store,
)
from recorder.events import Seal
from recorder.index import Index, SessionRow

NOW = 1_700_000_000.0


def run(coro: Awaitable) -> object:
    return asyncio.run(coro)


def make_cfg(tmp_path: Path, *, state: str = "state", store: str | None = None) -> Config:
    return Config(gateway=GatewaySection(state_dir=str(tmp_path / state), store=store),
                  identity=IdentitySection(dev_tokens=True))


def record(id_: str, *, created: float = NOW, expires: float | None = None, instance: str = "gw-1",
           requester: str = "alice", target: str = "appdb", fingerprint: str = "sql:abc",
           status: str = "pending") -> ApprovalRecord:
    return ApprovalRecord(id=id_, requester=requester, groups=("dev", "ops"), target=target, protocol="postgres",
                          kind="sql", command="DELETE FROM t WHERE id = 5", fingerprint=fingerprint,
                          rule="review-deletes", approvers=("dba",), session_id="s-1", instance=instance,
                          created=created, expires=created + 300 if expires is None else expires, status=status)


def session(id_: str, state_dir: Path, *, identity: str = "alice", target: str = "appdb", protocol: str = "postgres",
            started: float = NOW, sealed: bool = False) -> SessionRow:
    seal = Seal(session_id=id_, frames=7, last_hash=b"\x01" * 32, key_id="k1", signature=b"\x02" * 64) if sealed else None
    return SessionRow(id=id_, identity=identity, groups=("dev",), target=target, protocol=protocol,
                      client="127.0.0.1:5555", tls=True, instance="gw-1", auth="dev", started=started,
                      ended=started + 5 if sealed else None, end_reason="client closed" if sealed else None,
                      path=str(state_dir / "recordings" / f"{id_}.wgr"), frames=7, commands=3, denied=1,
                      sealed=sealed, seal=seal)


# ---------------------------------------------------------------- scenarios (every backend)

async def scenario_create_get(store: Store) -> None:
    rec = record("ap-111111aaaaaa")
    await store.create_approval(rec)
    assert await store.get_approval(rec.id) == rec
    assert await store.get_approval("ap-000000000000") is None
    with pytest.raises(WiregateError):  # the id is the primary key
        await store.create_approval(rec)


async def scenario_find_prefix(store: Store) -> None:
    await store.create_approval(record("ap-aaa111000000", created=NOW))
    await store.create_approval(record("ap-aaa222000000", created=NOW + 1))
    await store.create_approval(record("ap-bbb111000000", created=NOW + 2))
    await store.create_approval(record("ap-a_c111000000", created=NOW + 3))
    assert [r.id for r in await store.find_approvals("ap-aaa")] == ["ap-aaa222000000", "ap-aaa111000000"]
    assert [r.id for r in await store.find_approvals("ap-bbb111000000")] == ["ap-bbb111000000"]
    assert await store.find_approvals("AP-AAA") == []   # ids are case-sensitive
    assert await store.find_approvals("ap-%") == []     # LIKE wildcards are literal
    assert [r.id for r in await store.find_approvals("ap-a_")] == ["ap-a_c111000000"]
    assert await store.find_approvals("") == []
    assert await store.find_approvals("zz") == []


async def scenario_list_status(store: Store) -> None:
    for i in range(5):
        await store.create_approval(record(f"ap-list{i:08d}", created=NOW + i))
    await store.decide_approval("ap-list00000001", status="denied", decided_by="bob", decided_at=NOW + 10)
    await store.decide_approval("ap-list00000003", status="approved", decided_by="bob", decided_at=NOW + 10)
    every = await store.list_approvals()
    assert [r.id[-1] for r in every] == ["4", "3", "2", "1", "0"]  # newest first
    assert [r.id[-1] for r in await store.list_approvals(status="all")] == ["4", "3", "2", "1", "0"]
    assert [r.id[-1] for r in await store.list_approvals(status="pending")] == ["4", "2", "0"]
    assert [r.id[-1] for r in await store.list_approvals(status="denied")] == ["1"]
    assert [(r.id[-1], r.decided_by) for r in await store.list_approvals(status="approved")] == [("3", "bob")]
    assert await store.list_approvals(status="expired") == []
    assert [r.id[-1] for r in await store.list_approvals(limit=2)] == ["4", "3"]
    assert [r.id[-1] for r in await store.list_approvals(status="pending", limit=1)] == ["4"]
    with pytest.raises(ValueError, match="unknown approval status"):
        await store.list_approvals(status="bogus")
    with pytest.raises(ValueError, match="limit"):
        await store.list_approvals(limit=0)


async def scenario_decide_once(store: Store) -> None:
    rec = record("ap-decide000001")
    await store.create_approval(rec)
    decided = await store.decide_approval(rec.id, status="denied", decided_by="bob", decided_at=NOW + 5,
                                          reason="not today")
    assert decided is not None
    assert (decided.status, decided.decided_by, decided.decided_at, decided.reason, decided.grant_until) == \
        ("denied", "bob", NOW + 5, "not today", None)
    assert decided.command == rec.command and decided.groups == rec.groups
    assert await store.get_approval(rec.id) == decided
    # a second decision, whoever makes it, finds nothing pending
    assert await store.decide_approval(rec.id, status="approved", decided_by="carol", decided_at=NOW + 6) is None
    assert (await store.get_approval(rec.id)).status == "denied"
    assert await store.decide_approval("ap-unknown00000", status="approved", decided_by="bob",
                                       decided_at=NOW) is None
    with pytest.raises(ValueError):
        await store.decide_approval(rec.id, status="pending", decided_by="bob", decided_at=NOW)
    with pytest.raises(ValueError, match="grant_until"):
        await store.decide_approval(rec.id, status="denied", decided_by="bob", decided_at=NOW, grant_until=NOW + 60)


async def scenario_decide_race(store: Store, other: Store | None = None) -> None:
    """Many deciders at once (on one or two stores): exactly one wins."""
    rec = record("ap-race00000001")
    await store.create_approval(rec)
    stores = [store, other or store]
    results = await asyncio.gather(*(
        stores[i % 2].decide_approval(rec.id, status="approved" if i % 3 else "denied", decided_by=f"u{i}",
                                      decided_at=NOW + i) for i in range(12)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get_approval(rec.id) == winners[0]


async def scenario_grant_window(store: Store) -> None:
    rec = record("ap-grant0000001", requester="alice", target="appdb", fingerprint="sql:fp1")
    await store.create_approval(rec)
    decided = await store.decide_approval(rec.id, status="approved", decided_by="bob", decided_at=NOW,
                                          grant_until=NOW + 1800)
    assert decided is not None and decided.grant_until == NOW + 1800
    grant = await store.active_grant("alice", "appdb", "sql:fp1", NOW + 60)
    assert grant == Grant(identity="alice", target="appdb", fingerprint="sql:fp1", until=NOW + 1800,
                          approval_id=rec.id)
    assert await store.active_grant("alice", "appdb", "sql:fp1", NOW + 1799.5) == grant
    assert await store.active_grant("alice", "appdb", "sql:fp1", NOW + 1800) is None  # the window has ended
    assert await store.active_grant("alice", "appdb", "sql:fp1", NOW + 4000) is None
    assert await store.active_grant("mallory", "appdb", "sql:fp1", NOW + 60) is None
    assert await store.active_grant("alice", "otherdb", "sql:fp1", NOW + 60) is None
    assert await store.active_grant("alice", "appdb", "sql:fp2", NOW + 60) is None
    # a plain approval and a denial grant nothing
    plain = record("ap-grant0000002", fingerprint="sql:fp2")
    await store.create_approval(plain)
    await store.decide_approval(plain.id, status="approved", decided_by="bob", decided_at=NOW)
    assert await store.active_grant("alice", "appdb", "sql:fp2", NOW + 1) is None
    # a later, longer window wins
    longer = record("ap-grant0000003", fingerprint="sql:fp1")
    await store.create_approval(longer)
    await store.decide_approval(longer.id, status="approved", decided_by="carol", decided_at=NOW + 10,
                                grant_until=NOW + 7200)
    assert (await store.active_grant("alice", "appdb", "sql:fp1", NOW + 60)).approval_id == longer.id
    assert (await store.active_grant("alice", "appdb", "sql:fp1", NOW + 3600)).approval_id == longer.id
    # ended grants go when pending requests are expired; running ones stay
    await store.expire_pending(NOW + 3600)
    assert await store.active_grant("alice", "appdb", "sql:fp1", NOW + 3600) is not None


async def scenario_expire_pending(store: Store) -> None:
    early = record("ap-expire000001", created=NOW, expires=NOW + 60)
    late = record("ap-expire000002", created=NOW + 1, expires=NOW + 600)
    done = record("ap-expire000003", created=NOW + 2, expires=NOW + 30)
    for r in (early, late, done):
        await store.create_approval(r)
    await store.decide_approval(done.id, status="approved", decided_by="bob", decided_at=NOW + 3)
    assert await store.expire_pending(NOW + 59) == []
    expired = await store.expire_pending(NOW + 60)  # expires <= now
    assert [(r.id, r.status, r.decided_at, r.decided_by) for r in expired] == [(early.id, "expired", NOW + 60, None)]
    assert await store.get_approval(early.id) == expired[0]
    assert (await store.get_approval(late.id)).status == "pending"
    assert (await store.get_approval(done.id)).status == "approved"
    assert await store.expire_pending(NOW + 61) == []
    assert await store.decide_approval(early.id, status="approved", decided_by="bob", decided_at=NOW + 70) is None
    assert [r.id for r in await store.expire_pending(NOW + 10_000)] == [late.id]


async def scenario_withdraw_instance(store: Store) -> None:
    mine = [record(f"ap-withdraw0000{i}", created=NOW + i, instance="gw-a") for i in range(3)]
    theirs = record("ap-withdraw0009", instance="gw-b")
    for r in (*mine, theirs):
        await store.create_approval(r)
    await store.decide_approval(mine[1].id, status="approved", decided_by="bob", decided_at=NOW + 5)
    withdrawn = await store.withdraw_instance("gw-a", NOW + 9)
    assert [(r.id, r.status, r.decided_at) for r in withdrawn] == \
        [(mine[0].id, "withdrawn", NOW + 9), (mine[2].id, "withdrawn", NOW + 9)]
    assert (await store.get_approval(mine[1].id)).status == "approved"
    assert (await store.get_approval(theirs.id)).status == "pending"
    assert await store.withdraw_instance("gw-a", NOW + 10) == []
    assert await store.withdraw_instance("gw-unknown", NOW + 10) == []


async def scenario_publish_local(store: Store) -> None:
    """A publish reaches this store's subscribers, on the event loop's thread."""
    seen: list[tuple[str, str]] = []
    loop_thread = threading.get_ident()
    arrived = asyncio.Event()

    def make(name: str) -> Callable[[str], None]:
        def callback(approval_id: str) -> None:
            assert threading.get_ident() == loop_thread
            seen.append((name, approval_id))
            if len(seen) == 4:
                arrived.set()
        return callback

    store.subscribe(make("a"))
    store.subscribe(make("b"))
    await store.publish("ap-pub00000001")
    await store.publish("ap-pub00000002")
    await asyncio.wait_for(arrived.wait(), 2)
    assert sorted(seen) == [("a", "ap-pub00000001"), ("a", "ap-pub00000002"),
                            ("b", "ap-pub00000001"), ("b", "ap-pub00000002")]
    assert [i for n, i in seen if n == "a"] == ["ap-pub00000001", "ap-pub00000002"]  # in order


async def scenario_sessions(store: Store, write: Callable[[Sequence[SessionRow]], Awaitable[None]],
                            state_dir: Path) -> None:
    assert await store.list_sessions() == []
    rows = [session("sess-aaaa-0001", state_dir, started=NOW, sealed=True),
            session("sess-aaaa-0002", state_dir, started=NOW + 1, identity="bob", protocol="ssh", target="box"),
            session("sess-bbbb-0003", state_dir, started=NOW + 2)]
    await write(rows)
    assert [r.id for r in await store.list_sessions()] == ["sess-bbbb-0003", "sess-aaaa-0002", "sess-aaaa-0001"]
    assert await store.list_sessions(limit=1) == [rows[2]]
    assert [r.id for r in await store.list_sessions(identity="alice")] == ["sess-bbbb-0003", "sess-aaaa-0001"]
    assert await store.list_sessions(identity="bob") == [rows[1]]
    assert await store.list_sessions(target="box", protocol="ssh") == [rows[1]]
    assert await store.list_sessions(target="box", protocol="postgres") == []
    assert await store.get_session("sess-aaaa-0001") == rows[0]  # seal and all
    assert (await store.get_session("sess-aaaa-0001")).seal.signature == b"\x02" * 64
    assert await store.get_session("sess-bbbb") == rows[2]        # a unique prefix
    assert await store.get_session("sess-aaaa") is None           # two match
    assert await store.get_session("nope") is None
    assert await store.get_session("") is None
    # an update (the session ended) replaces the row
    ended = session("sess-aaaa-0002", state_dir, started=NOW + 1, identity="bob", protocol="ssh", target="box",
                    sealed=True)
    await write([ended])
    assert await store.get_session("sess-aaaa-0002") == ended
    assert len(await store.list_sessions()) == 3


async def scenario_dev_key(store: Store, cfg: Config) -> None:
    """The store's dev key is the one tokens are minted and verified with."""
    pem = await asyncio.to_thread(store.dev_signing_key_pem)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert await asyncio.to_thread(store.dev_signing_key_pem) == pem
    assert await asyncio.to_thread(dev_signing_key_pem_for, cfg) == pem
    token = await asyncio.to_thread(issue_dev_token, cfg, "alice", ["dev"], 300)
    ident = await Authenticator(cfg, store=store).authenticate(token)
    assert (ident.name, ident.groups, ident.method) == ("alice", ("dev",), "dev")


SCENARIOS = [scenario_create_get, scenario_find_prefix, scenario_list_status, scenario_decide_once,
             scenario_decide_race, scenario_grant_window, scenario_expire_pending, scenario_withdraw_instance,
             scenario_publish_local]


# ---------------------------------------------------------------- SQLite

async def with_sqlite(cfg: Config, body: Callable[[SqliteStore], Awaitable[None]]) -> None:
    store = open_store(cfg, instance="gw-1")
    assert isinstance(store, SqliteStore) and store.kind == "sqlite"
    await store.open()
    try:
        await body(store)
    finally:
        await store.close()


def test_columns_follow_the_record():
    # a new ApprovalRecord field needs a column (and a migration): this fails until it has one
    assert APPROVAL_COLUMNS == ApprovalRecord.__struct_fields__


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__.removeprefix("scenario_"))
def test_sqlite_api(tmp_path, scenario):
    run(with_sqlite(make_cfg(tmp_path), scenario))


def test_open_creates_a_private_file_and_keeps_the_recorder_apart(tmp_path):
    cfg = make_cfg(tmp_path)
    run(with_sqlite(cfg, scenario_create_get))
    db = tmp_path / "state" / "wiregate.db"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    # the recorder opens the same file afterwards, migrates its own tables and reads and writes them
    index = Index(tmp_path / "state")
    index.upsert_session(session("s1", tmp_path / "state"))
    index.close()
    with sqlite3.connect(db) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert conn.execute("SELECT count(*) FROM approvals").fetchone() == (1,)
    assert meta == {"gateway.store": str(SCHEMA_VERSION), "recorder.sessions": "1"}
    assert {"meta", "approvals", "grants", "sessions"} <= tables
    # and the store still opens (its own version row untouched by the recorder)
    run(with_sqlite(cfg, lambda s: s.get_approval("ap-111111aaaaaa")))


def test_sessions_come_from_the_recorder_index(tmp_path):
    cfg = make_cfg(tmp_path)
    state = tmp_path / "state"

    async def body(store: SqliteStore) -> None:
        assert store.session_mirror() is None  # the recorder's own index is the index
        assert await store.get_session("anything") is None  # no index yet

        async def write(rows: Sequence[SessionRow]) -> None:
            # what the recorder's writer thread does, in a thread of its own
            def upsert() -> None:
                index = Index(state)
                index.upsert_sessions(rows)
                index.close()
            await asyncio.to_thread(upsert)

        await scenario_sessions(store, write, state)

    run(with_sqlite(cfg, body))


def test_sessions_index_written_before_the_store(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    index = Index(state)
    index.upsert_sessions([session("early-1", state, sealed=True)])
    index.close()

    async def body(store: SqliteStore) -> None:
        assert [r.id for r in await store.list_sessions()] == ["early-1"]
        assert (await store.get_session("early")).sealed

    run(with_sqlite(make_cfg(tmp_path), body))


def test_newer_schema_is_refused(tmp_path):
    cfg = make_cfg(tmp_path)
    run(with_sqlite(cfg, scenario_create_get))
    with sqlite3.connect(tmp_path / "state" / "wiregate.db") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'gateway.store'", (str(SCHEMA_VERSION + 1),))
    store = SqliteStore(cfg, instance="gw-1")
    with pytest.raises(WiregateError, match=rf"store schema {SCHEMA_VERSION + 1} is newer than this wiregate's "
                                            rf"\({SCHEMA_VERSION}\); upgrade wiregate"):
        run(store.open())
    with pytest.raises(WiregateError, match="not open"):
        run(store.get_approval("ap-111111aaaaaa"))


def test_newer_recorder_index_is_reported_not_hidden(tmp_path):
    cfg = make_cfg(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    Index(state).close()
    with sqlite3.connect(state / "wiregate.db") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'recorder.sessions'")

    async def body(store: SqliteStore) -> None:
        with pytest.raises(WiregateError, match="session index schema 99 is newer"):
            await store.list_sessions()

    run(with_sqlite(cfg, body))


def test_closed_store_refuses_calls(tmp_path):
    async def body() -> None:
        store = SqliteStore(make_cfg(tmp_path), instance="gw-1")
        await store.open()
        await store.close()
        with pytest.raises(WiregateError, match="not open"):
            await store.list_approvals()
    run(body())


def test_dev_key_is_the_state_dir_file(tmp_path):
    cfg = make_cfg(tmp_path)

    async def body(store: SqliteStore) -> None:
        await scenario_dev_key(store, cfg)

    run(with_sqlite(cfg, body))
    key_file = dev_key_path(cfg)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert key_file.read_bytes() == SqliteStore(cfg, instance="x").dev_signing_key_pem()
    # another state dir: another key, and the refusal says so
    token = issue_dev_token(cfg, "alice", [], 60)
    other = make_cfg(tmp_path, state="other")
    with pytest.raises(WiregateError, match=r"another gateway's key \(another state_dir\)"):
        run(Authenticator(other).authenticate(token))


def test_dev_key_file_with_loose_mode_is_refused(tmp_path):
    cfg = make_cfg(tmp_path)
    SqliteStore(cfg, instance="x").dev_signing_key_pem()
    os.chmod(dev_key_path(cfg), 0o644)
    with pytest.raises(WiregateError, match="accessible by other users"):
        SqliteStore(cfg, instance="x").dev_signing_key_pem()
    with pytest.raises(WiregateError, match="accessible by other users"):
        issue_dev_token(cfg, "alice", [], 60)


def test_open_store_picks_the_backend(tmp_path):
    assert type(open_store(make_cfg(tmp_path), instance="a")) is SqliteStore
    pg = open_store(make_cfg(tmp_path, store="postgresql://wiregate:s3cret@db.invalid/wiregate"), instance="a")
    assert type(pg) is PostgresStore and pg.kind == "postgresql"
    assert "s3cret" not in pg.where and pg.where == "postgresql://wiregate@db.invalid/wiregate"
