"""The bypass corpus (tests/corpus_sql.py) through the gateway against a real PostgreSQL.

Every DENIED case, sent by psql (simple protocol, one process per case), psycopg 3 (simple
protocol; extended with ``prepare=True`` and with bind parameters) and asyncpg (``fetch``, and
``prepare`` for the refused step), must be refused by the gateway at its step with 42501 (or the
documented fail-closed code), leave the database exactly as it was (a fingerprint of schemas,
relations, every table's rows, functions, operators, rules, triggers, policies, roles, grants,
large objects) and leave the session usable as the same role. Every ALLOWED case must run on
every client and return its expected rows.

The cases run in a database of their own (``corpus``) behind a gateway with the corpus rules;
the database is rebuilt whenever a case changed it. Pipelines and raw protocol sequences that
are not a list of statements (Parse without Sync, NUL bytes, a denied statement in the middle of
a pipeline, compared with a real server error in the same place) have their own tests below.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import subprocess
from typing import Any

import asyncpg
import msgspec
import psycopg
import pytest
from pglast import parser as pg_parser
from psycopg import pq

from protocols.postgres import codec
from tests.corpus_sql import ADMIN_ROLE, ALLOWED, DENIED, RULES, SETUP_SQL, Case, refusal_problem
from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess

DB = "corpus"
APP = "app"
DRIVERS = ("psql", "psycopg", "psycopg-prepared", "asyncpg", "asyncpg-prepare")
EXTENDED = ("psycopg-prepared", "asyncpg", "asyncpg-prepare")

# ------------------------------------------------------------------------------------------------
# the database: build, fingerprint, rebuild

def _ns(col: str) -> str:
    """SQL condition: the schema named by ``col`` is not a system schema."""
    return f"{col} NOT LIKE 'pg\\_%' AND {col} <> 'information_schema'"


FINGERPRINT: dict[str, str] = {
    "schemas": f"SELECT nspname || ':' || nspowner::regrole FROM pg_namespace WHERE {_ns('nspname')}",
    "relations": "SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || c.relowner::regrole"
                 " || ':' || coalesce(c.relacl::text, '') FROM pg_class c JOIN pg_namespace n"
                 f" ON n.oid = c.relnamespace WHERE {_ns('n.nspname')}",
    "functions": "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)"
                 " || '):' || md5(coalesce(p.prosrc, '') || coalesce(p.probin, '')) || ':' || p.prolang"
                 " || ':' || coalesce(p.proacl::text, '') FROM pg_proc p JOIN pg_namespace n"
                 f" ON n.oid = p.pronamespace WHERE {_ns('n.nspname')}",
    "operators": "SELECT n.nspname || '.' || o.oprname || ':' || o.oprcode::text FROM pg_operator o"
                 f" JOIN pg_namespace n ON n.oid = o.oprnamespace WHERE {_ns('n.nspname')}",
    "rules": "SELECT schemaname || '.' || tablename || ':' || rulename FROM pg_rules"
             f" WHERE {_ns('schemaname')}",
    "triggers": "SELECT tgrelid::regclass::text || ':' || tgname FROM pg_trigger WHERE NOT tgisinternal",
    "policies": "SELECT polrelid::regclass::text || ':' || polname FROM pg_policy",
    "roles": "SELECT rolname || ':' || rolsuper || rolcreaterole || rolcreatedb || rolcanlogin FROM pg_roles",
    "memberships": "SELECT roleid::regrole || '>' || member::regrole FROM pg_auth_members",
    "default_acl": "SELECT defaclrole::regrole || ':' || defaclacl::text FROM pg_default_acl",
    "large_objects": "SELECT count(*)::text FROM pg_largeobject_metadata",
    "settings": "SELECT coalesce(setrole::regrole::text, '') || ':' || setconfig::text FROM pg_db_role_setting"
                " WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
}

REBUILD_SQL = """
DO $$DECLARE s text; BEGIN
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
  LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP;
END $$;
SELECT lo_unlink(oid) FROM pg_largeobject_metadata;
ALTER DEFAULT PRIVILEGES FOR ROLE app REVOKE ALL ON TABLES FROM PUBLIC;
ALTER DATABASE corpus RESET ALL;
ALTER DATABASE corpus SET statement_timeout = '10s';
ALTER DATABASE corpus SET lock_timeout = '5s';
CREATE SCHEMA public AUTHORIZATION app;
CREATE SCHEMA vault AUTHORIZATION app;
SET ROLE app;
""" + SETUP_SQL + "\nRESET ROLE;\n"


class CorpusDb:
    """The superuser's view of the corpus database: fingerprint and rebuild."""

    def __init__(self, su: psycopg.Connection) -> None:
        self.su = su
        self.rebuild()
        self.baseline = self.fingerprint()

    def fingerprint(self) -> dict[str, list[str]]:
        fp = {k: sorted(str(r[0]) for r in self.su.execute(q)) for k, q in FINGERPRINT.items()}
        rows = []
        tables = self.su.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n"
            f" ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') AND {_ns('n.nspname')}").fetchall()
        for (name,) in sorted(tables):
            digest = self.su.execute(
                f"SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {name} x"
            ).fetchone()[0]
            rows.append(f"{name}={digest}")
        fp["rows"] = rows
        return fp

    def rebuild(self) -> None:
        extra = [r for (r,) in self.su.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'wg\\_corpus\\_%%' AND rolname <> %s", (ADMIN_ROLE,))]
        for role in extra:
            self.su.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
        self.su.execute(REBUILD_SQL)

    def settle(self, allowed: tuple[str, ...] = ()) -> dict[str, Any]:
        """What changed against the baseline (ignoring ``allowed`` parts); rebuild if anything did."""
        now = self.fingerprint()
        changed = {k: (self.baseline[k], now[k]) for k in now if now[k] != self.baseline[k]}
        if changed:
            self.rebuild()
            assert self.fingerprint() == self.baseline, "the corpus database could not be rebuilt"
        return {k: v for k, v in changed.items() if k not in allowed}


@pytest.fixture(scope="module")
def corpus_db(pg):
    exists = pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB}'").strip()
    if not exists:
        pg.create_database(DB, owner=APP)
    pg.psql(f"""
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ADMIN_ROLE}') THEN CREATE ROLE {ADMIN_ROLE} NOLOGIN; END IF;
END $$;
GRANT {ADMIN_ROLE} TO {APP};
""")
    su = psycopg.connect(pg.dsn(DB), autocommit=True)
    su.execute("SET lock_timeout = '10s'")
    try:
        yield CorpusDb(su)
    finally:
        su.close()


@pytest.fixture(scope="module")
def corpus_gw(pg, corpus_db, tmp_path_factory):
    g = GatewayProcess(
        tmp_path_factory.mktemp("corpus-gateway"),
        targets=[pg_target(DB, pg, tls="disable", database=DB)],
        rules=RULES,
        env={PW_ENV: pg.app_password},
    ).start()
    yield g
    g.stop()


# ------------------------------------------------------------------------------------------------
# clients


class Outcome(msgspec.Struct):
    """What a client saw. errors: (sqlstate, message, step index or None when unknown)."""

    errors: list[tuple[str | None, str, int | None]]
    rows: list[str]
    alive_as: str | None


def render(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def statements_in(sql: str) -> int:
    try:
        return len(pg_parser.split(sql))
    except Exception:  # not splittable: treat as several, i.e. simple protocol only
        return 2


def simple_only(case: Case) -> bool:
    """A case the extended protocol cannot carry as it is meant (several statements, COPY)."""
    return any(statements_in(s) > 1 or re.match(r"\s*copy\b", s, re.I) for s in case.steps)


_SESSION_CHANGING = re.compile(
    r"\b(set|reset|discard|set_config|create|alter|drop|comment|grant|revoke|truncate|do|call|load|security)\b",
    re.I)


def changes_session(case: Case) -> bool:
    return any(_SESSION_CHANGING.search(step) for step in case.steps)


_ERROR_LINE = re.compile(r"^(?:psql:[^:]*:\d+: )?(ERROR|FATAL):\s+([0-9A-Z]{5}): (.*)$")


class Clients:
    """One gateway session per client library for the whole module, reset between cases."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.dsn = gw.dsn("alice", gw.token("alice", ["dev"]), DB)
        self._pg: psycopg.Connection | None = None
        self.loop = asyncio.new_event_loop()
        self._apg: asyncpg.Connection | None = None

    # -- psql: a process per case, every step one -c (one Query message)
    def psql(self, case: Case) -> Outcome:
        args = ["psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=verbose", self.dsn]
        for step in case.steps:
            args += ["-c", step]
        args += ["-c", "SELECT 'alive:' || current_user"]
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        p = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env)
        errors: list[tuple[str | None, str, int | None]] = []
        for line in p.stderr.splitlines():
            if m := _ERROR_LINE.match(line):
                errors.append((m.group(2), m.group(3), None))
            elif "connection to server" in line or "server closed the connection" in line:
                errors.append((None, line, None))
        rows = p.stdout.splitlines()
        alive = rows.pop()[len("alive:"):] if rows and rows[-1].startswith("alive:") else None
        return Outcome(errors, rows, alive)

    # -- psycopg 3
    def pg(self) -> psycopg.Connection:
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._pg = psycopg.connect(self.dsn, autocommit=True)
            self._pg.prepare_threshold = None  # simple protocol unless a case asks for prepare
        return self._pg

    def psycopg(self, case: Case, *, prepared: bool) -> Outcome:
        conn = self.pg()
        errors: list[tuple[str | None, str, int | None]] = []
        rows: list[str] = []
        for i, step in enumerate(case.steps):
            params = case.params if i == len(case.steps) - 1 else None
            try:
                if params is not None:
                    cur = psycopg.RawCursor(conn)
                    cur.execute(step, params, prepare=True if prepared else None)
                elif not prepared and re.match(r"\s*copy\b", step, re.I):
                    with conn.cursor().copy(step) as copy:
                        data = b"".join(bytes(chunk) for chunk in copy)
                    rows += data.decode().splitlines()
                    continue
                else:
                    cur = conn.cursor()
                    cur.execute(step, prepare=True if prepared else None)
                while True:
                    if cur.description is not None:
                        rows += ["|".join(render(v) for v in r) for r in cur.fetchall()]
                    if not cur.nextset():
                        break
            except psycopg.Error as e:
                errors.append((e.sqlstate, e.diag.message_primary or str(e), i))
                if conn.closed or conn.broken:
                    return Outcome(errors, rows, None)
        return Outcome(errors, rows, self._psycopg_alive(conn))

    def _psycopg_alive(self, conn: psycopg.Connection) -> str | None:
        try:
            if conn.info.transaction_status == pq.TransactionStatus.INERROR:
                conn.execute("ROLLBACK")
            return conn.execute("SELECT current_user").fetchone()[0]
        except psycopg.Error:
            return None

    def reset_psycopg(self, fresh: bool) -> None:
        if self._pg is None or self._pg.closed or self._pg.broken:
            return
        try:
            if fresh:
                raise psycopg.Error("the next case gets a new session")
            if self._pg.info.transaction_status != pq.TransactionStatus.IDLE:
                self._pg.execute("ROLLBACK")
            self._pg.execute("DEALLOCATE ALL")
        except psycopg.Error:
            self._pg.close()

    # -- asyncpg: fetch (extended protocol, unnamed statements); prepare for the refused step
    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    def apg(self) -> asyncpg.Connection:
        if self._apg is None or self._apg.is_closed():
            self._apg = self._run(asyncpg.connect(self.dsn, statement_cache_size=0))
        return self._apg

    def asyncpg(self, case: Case, *, prepare_refused: bool) -> Outcome:
        conn = self.apg()
        errors: list[tuple[str | None, str, int | None]] = []
        rows: list[str] = []
        for i, step in enumerate(case.steps):
            params = case.params if i == len(case.steps) - 1 else None
            try:
                if prepare_refused and i == case.deny_index:
                    stmt = self._run(conn.prepare(step, timeout=10))
                    records = self._run(stmt.fetch(*(params or ()), timeout=10))
                else:
                    records = self._run(conn.fetch(step, *(params or ()), timeout=10))
                rows += ["|".join(render(v) for v in r.values()) for r in records]
            except asyncpg.PostgresError as e:
                errors.append((e.sqlstate, e.message, i))
            except (asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as e:
                errors.append((None, f"{type(e).__name__}: {e}", i))
                if conn.is_closed():
                    return Outcome(errors, rows, None)
        try:
            alive = self._run(conn.fetchval("SELECT current_user", timeout=10))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError):
            alive = None
        return Outcome(errors, rows, alive)

    def reset_asyncpg(self, fresh: bool) -> None:
        if self._apg is None or self._apg.is_closed():
            return
        try:
            if fresh:
                raise asyncpg.InterfaceError("the next case gets a new session")
            self._run(self._apg.execute("ROLLBACK; DEALLOCATE ALL", timeout=10))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError):
            self._run(self._apg.close(timeout=5))

    def run(self, driver: str, case: Case) -> Outcome:
        """Run ``case`` on ``driver``'s session; then roll back and deallocate, or drop the session."""
        try:
            if driver == "psql":
                return self.psql(case)
            if driver in ("psycopg", "psycopg-prepared"):
                return self.psycopg(case, prepared=driver == "psycopg-prepared")
            return self.asyncpg(case, prepare_refused=driver == "asyncpg-prepare")
        finally:
            # Each case starts from a session as fresh as a new one: a case that may have changed
            # session state (settings, search_path, the gateway's trust in its catalog after
            # DDL) gets its successor a new connection. DISCARD ALL would be cheaper, but the
            # gateway handles it conservatively (test_long_lived_session_*), which would turn
            # every later case into a test of that instead of itself.
            fresh = changes_session(case)
            self.reset_psycopg(fresh)
            self.reset_asyncpg(fresh)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        if self._apg is not None and not self._apg.is_closed():
            self._run(self._apg.close(timeout=5))
        self.loop.close()


@pytest.fixture(scope="module")
def clients(corpus_gw):
    c = Clients(corpus_gw)
    yield c
    c.close()


def combos(cases: list[Case], *, denied: bool) -> list[Any]:
    out = []
    for driver in DRIVERS:
        for case in cases:
            if case.clients is not None and driver not in case.clients:
                continue
            if driver == "psql" and case.params is not None:
                continue  # psql 15 has no \bind
            if driver == "asyncpg-prepare" and not denied:
                continue
            if not denied and driver in EXTENDED and simple_only(case):
                continue
            out.append(pytest.param(driver, case, id=f"{driver}-{case.id}"))
    return out


# ------------------------------------------------------------------------------------------------
# the corpus


@pytest.mark.parametrize(("driver", "case"), combos(DENIED, denied=True))
def test_denied(clients: Clients, corpus_db: CorpusDb, driver: str, case: Case) -> None:
    out = clients.run(driver, case)
    changed = corpus_db.settle(case.allow_changes)
    assert out.errors, f"not refused: {case.steps[case.deny_index]!r}, rows {out.rows[:5]}"
    code, message, step = out.errors[0]
    problem = refusal_problem(case, code, message)
    assert problem is None, problem
    if step is not None:
        assert step == case.deny_index, f"refused at step {step}, expected {case.deny_index}: {message}"
    assert changed == {}, f"the database changed: {changed}"
    assert out.alive_as == APP, f"session after the refusal: {out.alive_as!r}"


@pytest.mark.parametrize(("driver", "case"), combos(ALLOWED, denied=False))
def test_allowed(clients: Clients, corpus_db: CorpusDb, driver: str, case: Case) -> None:
    out = clients.run(driver, case)
    changed = corpus_db.settle()
    assert out.errors == [], f"failed: {out.errors}"
    if case.expect is not None:
        assert out.rows == list(case.expect)
    if not case.mutates:
        assert changed == {}, f"the database changed: {changed}"
    assert out.alive_as == APP


@pytest.fixture
def settled(corpus_db):
    """For the tests below: whatever they did (or a failed assertion left), the next starts clean."""
    yield
    corpus_db.settle()


# ------------------------------------------------------------------------------------------------
# pipelines: a refusal in the middle behaves like a server error in the same place

def _connect(dsn: str) -> pq.PGconn:
    pgc = pq.PGconn.connect(dsn.encode())
    assert pgc.status == pq.ConnStatus.OK, pgc.get_error_message()
    return pgc


def _sqlstate(r: pq.PGresult) -> str | None:
    v = r.error_field(pq.DiagnosticField.SQLSTATE)
    return v.decode() if v else None


SYNC = "<sync>"


def libpq_pipeline(dsn: str, script: list[str]) -> tuple[list[str], str]:
    """Send ``script`` (statements via Parse/Bind/Execute, SYNC marks) in one libpq pipeline.

    Returns one entry per statement ("ok", "error:SQLSTATE" or "aborted") and per Sync, and the
    transaction status after the last Sync.
    """
    pgc = _connect(dsn)
    try:
        pgc.enter_pipeline_mode()
        for item in script:
            if item == SYNC:
                pgc.pipeline_sync()
            else:
                pgc.send_query_params(item.encode(), None)
        pgc.flush()
        seen: list[str] = []
        syncs = script.count(SYNC)
        while syncs:
            r = pgc.get_result()
            if r is None:
                continue
            if r.status == pq.ExecStatus.PIPELINE_SYNC:
                seen.append(SYNC)
                syncs -= 1
            elif r.status == pq.ExecStatus.FATAL_ERROR:
                seen.append(f"error:{_sqlstate(r)}")
            elif r.status == pq.ExecStatus.PIPELINE_ABORTED:
                seen.append("aborted")
            else:
                seen.append("ok")
        pgc.exit_pipeline_mode()
        return seen, pq.TransactionStatus(pgc.transaction_status).name
    finally:
        pgc.finish()


PIPELINES = {
    "one-sync": ["INSERT INTO t VALUES (50)", "{x}", "INSERT INTO t VALUES (51)", SYNC],
    "sync-each": ["INSERT INTO t VALUES (50)", SYNC, "{x}", SYNC, "INSERT INTO t VALUES (51)", SYNC],
    "sync-after-refusal": ["INSERT INTO t VALUES (50)", "{x}", SYNC, "INSERT INTO t VALUES (51)", SYNC],
    "explicit-transaction": ["BEGIN", "INSERT INTO t VALUES (50)", SYNC, "{x}", SYNC, "INSERT INTO t VALUES (51)",
                             SYNC, "COMMIT", SYNC],
}


@pytest.mark.usefixtures("settled")
@pytest.mark.parametrize("denied", ["DROP TABLE t", "SELECT * FROM secrets", "SELECT pg_sleep(0)"])
@pytest.mark.parametrize("shape", list(PIPELINES))
def test_pipeline_refusal_matches_a_server_error(clients, corpus_db, shape, denied):
    def run(x: str) -> tuple[list[str], str, list[int]]:
        seen, status = libpq_pipeline(clients.dsn, [s.replace("{x}", x) for s in PIPELINES[shape]])
        ids = [r[0] for r in corpus_db.su.execute("SELECT id FROM t ORDER BY id")]
        corpus_db.su.execute("DELETE FROM t WHERE id >= 50")
        return seen, status, ids

    server_error = run("SELECT 1/0")
    refused = run(denied)
    changed = corpus_db.settle()
    assert "error:42501" in refused[0], refused
    assert [s.replace("error:42501", "error:22012") for s in refused[0]] == server_error[0]
    assert refused[1:] == server_error[1:]
    assert changed == {}


@pytest.mark.usefixtures("settled")
def test_psycopg_pipeline_statements_before_the_refusal_ran(clients, corpus_db):
    conn = psycopg.connect(clients.dsn, autocommit=True)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            with conn.pipeline() as p:
                c1 = conn.execute("INSERT INTO t VALUES (60) RETURNING id")
                p.sync()
                conn.execute("COMMIT; DROP TABLE t")
                conn.execute("INSERT INTO t VALUES (61)")
        assert 'rule "no-destructive"' in str(e.value)
        assert c1.fetchone() == (60,)
        assert conn.execute("SELECT array_agg(id ORDER BY id) FROM t").fetchone()[0] == [1, 2, 3, 60]
    finally:
        conn.close()
        corpus_db.su.execute("DELETE FROM t WHERE id >= 50")
    assert corpus_db.settle() == {}


# ------------------------------------------------------------------------------------------------
# extended protocol: named statements and portals are tracked


@pytest.mark.usefixtures("settled")
def test_denied_named_statement_cannot_be_executed_later(clients, corpus_db):
    pgc = _connect(clients.dsn)
    try:
        r = pgc.prepare(b"corpus_s1", b"DELETE FROM t")
        assert r.status == pq.ExecStatus.FATAL_ERROR and _sqlstate(r) == "42501"
        assert b'rule "no-destructive"' in r.error_message
        for _ in range(2):
            r = pgc.exec_prepared(b"corpus_s1", None)
            assert r.status == pq.ExecStatus.FATAL_ERROR, "a refused statement was executed"
        r = pgc.exec_(b"SELECT count(*) FROM secrets_archive")
        assert r.status == pq.ExecStatus.TUPLES_OK and r.get_value(0, 0) == b"2"
    finally:
        pgc.finish()
    assert corpus_db.settle() == {}


@pytest.mark.usefixtures("settled")
@pytest.mark.parametrize("name", [b"corpus_s2", b""], ids=["named", "unnamed"])
def test_parse_bind_execute_in_one_flight(clients, corpus_db, name):
    """Parse of a denied statement with Bind/Execute queued behind it before any Sync: the
    gateway must skip to Sync, not forward the Bind (which would run whatever statement of that
    name the server still has)."""
    pgc = _connect(clients.dsn)
    try:
        r = pgc.prepare(name, b"SELECT count(*) FROM secrets_archive")
        assert r.status == pq.ExecStatus.COMMAND_OK
        if name:
            assert pgc.exec_(b"DEALLOCATE corpus_s2").status == pq.ExecStatus.COMMAND_OK
        pgc.enter_pipeline_mode()
        pgc.send_prepare(name, b"DELETE FROM t RETURNING id")
        pgc.send_query_prepared(name, None)
        pgc.pipeline_sync()
        pgc.flush()
        seen = []
        while len(seen) < 3:
            r = pgc.get_result()
            if r is not None:
                seen.append((r.status, _sqlstate(r)))
        pgc.exit_pipeline_mode()
        assert seen[0] == (pq.ExecStatus.FATAL_ERROR, "42501")
        assert seen[1][0] == pq.ExecStatus.PIPELINE_ABORTED
        assert seen[2][0] == pq.ExecStatus.PIPELINE_SYNC
        r = pgc.exec_(b"SELECT current_user")
        assert r.get_value(0, 0) == APP.encode()
    finally:
        pgc.finish()
    assert corpus_db.settle() == {}


# ------------------------------------------------------------------------------------------------
# bytes drivers cannot send, and the MCP read-only wrapper


def _read_until_ready(s: socket.socket) -> bytes:
    buf = b""
    while True:
        chunk = s.recv(65536)
        assert chunk, f"connection closed; got {buf!r}"
        buf += chunk
        if len(buf) >= 6 and buf[-6:-1] == b"Z\x00\x00\x00\x05":
            return buf


@pytest.mark.usefixtures("settled")
def test_nul_byte_inside_a_query_message(clients, corpus_db, corpus_gw):
    s = _raw_session(corpus_gw)
    try:
        body = b"SELECT 1\x00; DROP TABLE t\x00"
        s.sendall(b"Q" + struct.pack("!I", len(body) + 4) + body)
        reply = _read_until_ready(s)
        assert reply[:1] == b"E", reply  # refused, by the gateway or as a malformed message
        s.sendall(codec.query("SELECT current_user"))
        reply = _read_until_ready(s)
        assert b"D" in reply and APP.encode() in reply, reply
    finally:
        s.close()
    assert corpus_db.settle() == {}


def _raw_session(gw: GatewayProcess) -> socket.socket:
    s = socket.create_connection((gw.host, gw.port), timeout=10)
    s.sendall(codec.startup_message({"user": "alice", "database": DB}))
    assert s.recv(9)[:1] == b"R"  # cleartext password request (loopback, no TLS)
    s.sendall(codec.password_message(gw.token("alice", ["dev"]).encode()))
    _read_until_ready(s)
    return s


@pytest.mark.usefixtures("settled")
@pytest.mark.parametrize(("function", "args"), [("lo_creat", [b"-1"]), ("pg_sleep", [b"0"]),
                                                ("lo_from_bytea", [b"0", b"\\x00"])])
def test_fastpath_function_call_is_checked(clients, corpus_db, corpus_gw, function, args):
    """libpq's PQfn (the FunctionCall message) names a function by OID, bypassing SQL."""
    oid = corpus_db.su.execute("SELECT %s::regproc::oid", (function,)).fetchone()[0]
    s = _raw_session(corpus_gw)
    try:
        body = struct.pack("!IHH", oid, 0, len(args))
        body += b"".join(struct.pack("!I", len(a)) + a for a in args) + struct.pack("!H", 0)
        s.sendall(b"F" + struct.pack("!I", len(body) + 4) + body)
        reply = _read_until_ready(s)
        assert reply[:1] == b"E" and b"42501" in reply and b'rule "no-sleep"' in reply, reply
        s.sendall(codec.query("SELECT current_user"))
        assert APP.encode() in _read_until_ready(s)
    finally:
        s.close()
    assert corpus_db.settle() == {}


@pytest.mark.usefixtures("settled")
@pytest.mark.parametrize(("option", "probe"), [
    (f"-c role={ADMIN_ROLE}", None),
    (f"-c session_authorization={ADMIN_ROLE}", None),
    ("-c standard_conforming_strings=off", "SELECT 'a\\'';DROP TABLE t;--'"),
    ("-c search_path=vault", "SELECT * FROM keys"),
], ids=["role", "session_authorization", "scs-off", "search_path"])
def test_startup_options_do_not_bypass_the_rules(clients, corpus_db, option, probe):
    """What SET ROLE / SET search_path / scs off do, done by the start-up packet instead."""
    try:
        conn = psycopg.connect(clients.dsn, autocommit=True, options=option)
    except psycopg.OperationalError:
        return  # refusing such a session is fine too
    try:
        assert conn.execute("SELECT current_user, session_user").fetchone() == (APP, APP)
        if probe is not None:
            try:
                rows = conn.execute(probe).fetchall()
            except psycopg.Error as e:
                assert e.sqlstate in ("42501", "0A000", "42601"), e
                assert (e.diag.message_primary or "").startswith("wiregate:"), e
            else:
                pytest.fail(f"{probe!r} ran and returned {rows}")
    finally:
        conn.close()
    assert corpus_db.settle() == {}


@pytest.mark.usefixtures("settled")
@pytest.mark.parametrize("step", [
    "CREATE FUNCTION corpus_one() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "DISCARD ALL",
    "SET search_path = public",
    "RESET search_path",
], ids=["after-ddl", "after-discard-all", "after-set-search-path-public", "after-reset-search-path"])
def test_long_lived_session_keeps_its_judgement(clients, corpus_db, step):
    """A pooled connection lives through migrations (DDL) and the pooler's DISCARD ALL
    (pgbouncer's server_reset_query). Afterwards a table the catalog holds in public only is
    still not vault's, and vault is still protected, qualified or not."""
    with psycopg.connect(clients.dsn, autocommit=True) as conn:
        conn.execute(step)
        for sql in ("SELECT * FROM vault.keys", "SELECT * FROM keys"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match='rule "no-secrets"'):
                conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM items WHERE note LIKE '%DELETE%'").fetchone() == (1,)


@pytest.mark.usefixtures("settled")
def test_mcp_read_only_wrapper_cannot_be_escaped(clients, corpus_db):
    with psycopg.connect(clients.dsn) as conn:
        conn.read_only = True  # psycopg opens BEGIN READ ONLY, as MCP database tools do
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
        for escape in ("COMMIT; DROP TABLE t", "COMMIT; BEGIN; DELETE FROM t; COMMIT", "END; TRUNCATE t"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match='rule "no-destructive"'):
                conn.execute(escape)
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert corpus_db.settle() == {}
