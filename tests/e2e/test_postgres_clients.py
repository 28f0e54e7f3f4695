"""Real clients through the gateway against a real PostgreSQL: psql, psycopg 3, asyncpg, pgbench."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import os
import subprocess
import threading
import time
import uuid

import asyncpg
import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import pq


def psql(dsn: str, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    proc = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", dsn, *args], input=input,
                          capture_output=True, text=True, timeout=60, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"psql failed ({proc.returncode}): {proc.stderr}")
    return proc


# ------------------------------------------------------------------ psql


def test_psql_over_tls_reads_data(dsn):
    out = psql(dsn, "-At", "-c", "SELECT count(*) FROM customers", "-c", "SHOW ssl").stdout.split()
    assert int(out[0]) >= 50


def test_psql_session_is_tls_to_the_gateway(dsn):
    # psql's \conninfo reports the TLS of its own connection, i.e. to the gateway
    out = psql(dsn, "-c", r"\conninfo").stdout
    assert "SSL connection" in out


def test_psql_meta_commands(dsn):
    out = psql(dsn, "-c", r"\dt", "-c", r"\d customers", "-c", r"\dn", "-c", r"\df", "-c", r"\du",
               "-c", r"\l").stdout
    assert "customers" in out and "items" in out
    assert "email" in out  # column list of \d customers
    assert "public" in out


def test_psql_copy_both_ways(dsn, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("".join(f"{i},label {i}\n" for i in range(5000)))
    out = tmp_path / "out.csv"
    psql(dsn, "-c", "DROP TABLE IF EXISTS copy_t", check=False)
    psql(dsn, "-c", "CREATE TABLE IF NOT EXISTS copy_t(id int, label text)", "-c", "DELETE FROM copy_t",
         "-c", rf"\copy copy_t FROM '{src}' WITH (FORMAT csv)",
         "-c", rf"\copy (SELECT * FROM copy_t ORDER BY id) TO '{out}' WITH (FORMAT csv)")
    assert out.read_text() == src.read_text()


def test_psql_denied_statement_names_rule_and_session_goes_on(dsn):
    proc = psql(dsn, "-v", "ON_ERROR_STOP=0", input="DROP TABLE customers;\nSELECT 42;\n", check=False)
    assert 'wiregate: blocked by rule "no-destructive-sql"' in proc.stderr
    assert "42" in proc.stdout
    assert int(psql(dsn, "-At", "-c", "SELECT count(*) FROM customers").stdout) >= 50


def test_psql_denied_inside_multi_statement_and_comments(dsn):
    for sql in ["SELECT 1; DROP TABLE customers", "/* hi */ drop /* x */ table customers",
                'DrOp TaBlE "customers"', "WITH x AS (SELECT 1) SELECT 1; TRUNCATE customers"]:
        proc = psql(dsn, "-c", sql, check=False)
        assert proc.returncode != 0 and "blocked by rule" in proc.stderr, sql


def test_custom_rule_message(dsn):
    proc = psql(dsn, "-c", "ALTER ROLE app NOSUPERUSER", check=False)
    assert 'blocked by rule "no-role-changes": roles are managed by the platform team' in proc.stderr


def test_denied_statement_in_transaction_aborts_it_like_a_server_error(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS txn_t(id int)")
        conn.execute("DELETE FROM txn_t")
        conn.commit()
        conn.execute("INSERT INTO txn_t VALUES (1)")
        with pytest.raises(pg_errors.InsufficientPrivilege):
            conn.execute("DROP TABLE txn_t")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        with pytest.raises(pg_errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM txn_t").fetchone()[0] == 0


# ------------------------------------------------------------------ psycopg 3


def test_psycopg_extended_protocol_and_types(dsn):
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT %s::int + 1, %s::text, %s::numeric, %s::timestamptz, %s::jsonb",
                           (41, "héllo", decimal.Decimal("1.25"), dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
                            json.dumps({"a": [1, 2]}))).fetchone()
        assert row[0] == 42 and row[1] == "héllo" and row[2] == decimal.Decimal("1.25")
        assert row[3] == dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc) and row[4] == {"a": [1, 2]}
        # a server-side prepared statement, reused
        for i in range(10):
            cur = conn.execute("SELECT id, label FROM items WHERE id = %s", (i + 1,), prepare=True)
            assert cur.fetchone()[0] == i + 1


def test_psycopg_binary_results(dsn):
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor(binary=True)
        cur.execute("SELECT id, label, qty, price, created FROM items ORDER BY id LIMIT 3")
        rows = cur.fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        assert isinstance(rows[0][3], decimal.Decimal) and isinstance(rows[0][4], dt.datetime)
        assert cur.pgresult.fformat(0) == pq.Format.BINARY


def test_psycopg_pipeline_mode_with_a_denied_statement(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            c2 = conn.execute("SELECT %s::int", (2,))
            p.sync()
            with pytest.raises(pg_errors.InsufficientPrivilege) as e:
                conn.execute("DROP TABLE items")
                p.sync()
            assert "no-destructive-sql" in str(e.value)
        assert c1.fetchone() == (1,) and c2.fetchone() == (2,)
        with conn.pipeline():
            cs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
        assert [c.fetchone()[0] for c in cs] == [i * 2 for i in range(50)]
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1000


def test_psycopg_extended_denial_skips_to_sync_and_session_goes_on(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(pg_errors.InsufficientPrivilege) as e:
            conn.execute("TRUNCATE items")
        assert e.value.sqlstate == "42501"
        assert 'wiregate: blocked by rule "no-destructive-sql"' in str(e.value)
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)


def test_psycopg_copy_in_and_out(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS copy_p(id int, payload text)")
        conn.execute("DELETE FROM copy_p")
        payload = "x" * 5000
        with conn.cursor().copy("COPY copy_p FROM STDIN") as cp:
            for i in range(2000):
                cp.write_row((i, payload))
        out = []
        with conn.cursor().copy("COPY (SELECT id, payload FROM copy_p ORDER BY id) TO STDOUT") as cp:
            for row in cp.rows():
                out.append(row)
        assert len(out) == 2000 and out[-1] == ("1999", payload)
        conn.rollback()


def test_psycopg_cancel(dsn):
    with psycopg.connect(dsn) as conn:
        threading.Timer(0.5, conn.cancel_safe if hasattr(conn, "cancel_safe") else conn.cancel).start()
        started = time.monotonic()
        with pytest.raises(pg_errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        assert time.monotonic() - started < 10
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_notify_and_parameter_status(dsn):
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as sender:
        listener.execute("LISTEN wg_channel")
        sender.execute("NOTIFY wg_channel, 'hello'")
        got = list(listener.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [("wg_channel", "hello")]
        sender.execute("SET application_name = 'renamed'")
        assert sender.info.parameter_status("application_name") == "renamed"


def test_psycopg_notices_and_errors(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$BEGIN RAISE NOTICE 'hi there'; END$$")
        assert notices == ["hi there"]
        with pytest.raises(pg_errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        with pytest.raises(pg_errors.SyntaxError):
            conn.execute("SELEC 1")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_large_objects_use_function_call(dsn):
    # libpq's large-object API goes through the FunctionCall message
    conn = psycopg.connect(dsn)
    try:
        pgconn = conn.pgconn
        pgconn.exec_(b"BEGIN")
        oid = pgconn.exec_(b"SELECT lo_create(0)").get_value(0, 0)
        assert int(oid) > 0
        pgconn.exec_(b"ROLLBACK")
    finally:
        conn.close()


# ------------------------------------------------------------------ asyncpg


def test_asyncpg_prepared_statements_and_binary_types(dsn):
    async def main():
        conn = await asyncpg.connect(dsn)
        try:
            stmt = await conn.prepare("SELECT id, label, qty, price, created FROM items WHERE id = ANY($1::int[]) ORDER BY id")
            rows = await stmt.fetch([1, 2, 3])
            assert [r["id"] for r in rows] == [1, 2, 3]
            u = uuid.uuid4()
            row = await conn.fetchrow("SELECT $1::uuid, $2::int[], $3::jsonb, $4::bytea, $5::interval",
                                      u, [1, 2], '{"k": 1}', b"\x00\xff", dt.timedelta(hours=2))
            assert row[0] == u and row[1] == [1, 2] and row[3] == b"\x00\xff" and row[4] == dt.timedelta(hours=2)
            async with conn.transaction():
                await conn.execute("CREATE TEMP TABLE t_async(id int)")
                await conn.executemany("INSERT INTO t_async VALUES ($1)", [(i,) for i in range(100)])
                assert await conn.fetchval("SELECT sum(id) FROM t_async") == 4950
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DROP TABLE items")
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    asyncio.run(main())


def test_asyncpg_copy(dsn):
    async def main():
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TEMP TABLE t_copy(id int, s text)")
            await conn.copy_records_to_table("t_copy", records=[(i, f"s{i}") for i in range(3000)])
            assert await conn.fetchval("SELECT count(*) FROM t_copy") == 3000
        finally:
            await conn.close()

    asyncio.run(main())


# ------------------------------------------------------------------ pgbench


def test_pgbench_init_and_select_only(gw, alice, tmp_path):
    env = dict(os.environ, PGPASSWORD=alice, PGSSLMODE="require")
    base = ["-h", gw.host, "-p", str(gw.port), "-U", "alice"]
    init = subprocess.run(["pgbench", "-i", "-s", "1", "-q", *base, "appdb"], env=env, capture_output=True,
                          text=True, timeout=120)
    # pgbench -i drops its tables first, which the rule denies on appdb: use the target without the rule
    assert init.returncode != 0 and "blocked by rule" in init.stderr
    run = subprocess.run(["pgbench", "-i", "-s", "1", "-q", *base, "bench"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    bench = subprocess.run(["pgbench", "-S", "-n", "-T", "3", "-c", "4", "-j", "2", *base, "bench"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    assert "tps =" in bench.stdout
    assert " 0 failed" in bench.stdout or "number of failed transactions: 0" in bench.stdout
