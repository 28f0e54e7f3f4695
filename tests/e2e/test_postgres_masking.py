"""Result masking through the gateway, with real clients: psql, psycopg 3 (text and binary) and asyncpg.

Every way a masked column can reach a client is tried: the column itself, aliases, table aliases,
subqueries, CTEs, views (and a view over a view), expressions, casts, aggregates, set operations,
cursors, prepared statements, COPY in text, CSV and binary, and values found by detectors in
free text and literals. The raw values must never appear in what the client receives nor in the
gateway's log.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess

import asyncpg
import psycopg
import pytest

from gateway.pgserver import fake_customers
from policy.masking import Masker
from tests.conftest import CUSTOMER_ROWS
from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess

CUSTOMERS = fake_customers(CUSTOMER_ROWS)
REDACT = Masker("redact", b"k").whole
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")

SETUP = """
SET ROLE app;
CREATE VIEW mask_contacts AS SELECT id, email AS contact, name FROM customers;
CREATE VIEW mask_contacts2 AS SELECT c.contact AS addr, upper(c.name) AS who FROM mask_contacts c;
CREATE TABLE mask_people (id int PRIMARY KEY, ssn text, salary numeric, badge int);
INSERT INTO mask_people VALUES (1, '123-45-6789', 1000.50, 41111111), (2, '987-65-4320', 2000, 7);
CREATE TABLE mask_orders (id int, card text, region text) PARTITION BY LIST (region);
CREATE TABLE mask_orders_eu PARTITION OF mask_orders FOR VALUES IN ('eu');
INSERT INTO mask_orders VALUES (1, 'order-card-secret', 'eu');
CREATE TABLE mask_base (id int, token text);
CREATE TABLE mask_child (extra int) INHERITS (mask_base);
INSERT INTO mask_child VALUES (1, 'child-token-value', 0);
CREATE SCHEMA mask_vault;
CREATE TABLE mask_vault.keys (id int, secret text);
INSERT INTO mask_vault.keys VALUES (1, 'hunter2-secret-value');
RESET ROLE;
"""

RULES = [
    {"name": "mask-email", "action": "mask", "columns": ["customers.email"], "style": "partial"},
    {"name": "mask-ssn", "action": "mask", "columns": ["*.ssn"], "style": "redact"},
    {"name": "hash-card", "action": "mask", "columns": ["public.customers.card"], "style": "hash"},
    {"name": "null-salary", "action": "mask", "columns": ["mask_people.salary"], "style": "null"},
    {"name": "vault", "action": "mask", "columns": ["mask_vault.*.secret"], "style": "redact"},
    {"name": "order-cards", "action": "mask", "columns": ["mask_orders.card"], "style": "redact"},
    {"name": "child-tokens", "action": "mask", "columns": ["mask_child.token"], "style": "redact"},
    {"name": "pii-anywhere", "action": "mask", "detectors": ["email", "credit_card"], "style": "redact"},
    {"name": "no-drop", "action": "deny", "match": {"sql": ["DROP"]}},
]


@pytest.fixture(scope="module")
def mgw(pg, tmp_path_factory):
    pg.psql(SETUP, dbname=pg.app_db)
    g = GatewayProcess(tmp_path_factory.mktemp("mask-gateway"),
                       targets=[pg_target("masked", pg, tls="require")], rules=RULES,
                       env={PW_ENV: pg.app_password}).start()
    yield g
    g.stop()
    pg.psql("DROP VIEW mask_contacts2; DROP VIEW mask_contacts; DROP TABLE mask_people; DROP TABLE mask_orders; "
            "DROP TABLE mask_child; DROP TABLE mask_base; "
            "DROP SCHEMA mask_vault CASCADE", dbname=pg.app_db)


@pytest.fixture(scope="module")
def mdsn(mgw) -> str:
    return mgw.dsn("alice", mgw.token("alice", ["dev"]), "masked")


def one(dsn: str, sql: str, *, binary: bool = False, params=None):
    with psycopg.connect(dsn) as conn:
        return conn.cursor(binary=binary).execute(sql, params).fetchall()


def assert_partial(masked: str, real: str) -> None:
    assert masked != real
    assert masked.endswith(real[-4:])
    assert set(masked[:-4]) <= {"*"}


# ------------------------------------------------------------------ resolution paths

EMAIL_QUERIES = [
    ("column", "SELECT email FROM customers ORDER BY id"),
    ("alias", "SELECT email AS e FROM customers ORDER BY id"),
    ("table alias", "SELECT c.email FROM customers c ORDER BY c.id"),
    ("qualified", "SELECT public.customers.email FROM public.customers ORDER BY id"),
    ("subquery", "SELECT x FROM (SELECT id, email AS x FROM customers) s ORDER BY id"),
    ("nested subquery", "SELECT y FROM (SELECT id, x AS y FROM (SELECT id, email AS x FROM customers) a) b ORDER BY id"),
    ("cte", "WITH c AS (SELECT id, email FROM customers) SELECT email FROM c ORDER BY id"),
    ("view", "SELECT contact FROM mask_contacts ORDER BY id"),
    ("star", "SELECT * FROM (SELECT email FROM customers ORDER BY id) s"),
    ("join", "SELECT c.email FROM customers c JOIN mask_contacts m ON m.id = c.id ORDER BY c.id"),
    ("union", "SELECT email FROM (SELECT id, email FROM customers UNION ALL SELECT 1000, 'x@y') u ORDER BY id LIMIT 50"),
]


@pytest.mark.parametrize("sql", [q for _, q in EMAIL_QUERIES], ids=[i for i, _ in EMAIL_QUERIES])
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_email_column_is_masked_through_every_path(mdsn, sql, binary):
    rows = one(mdsn, sql, binary=binary)
    assert len(rows) == CUSTOMER_ROWS
    for (got,), real in zip(rows, CUSTOMERS):
        assert_partial(got, real["email"])


EXPRESSIONS = [
    ("upper", "SELECT upper(email) FROM customers ORDER BY id"),
    ("concat", "SELECT email || '' FROM customers ORDER BY id"),
    ("substr", "SELECT substr(email, 1, 40) FROM customers ORDER BY id"),
    ("cast", "SELECT email::varchar(200) FROM customers ORDER BY id"),
    ("case", "SELECT CASE WHEN id > 0 THEN email END FROM customers ORDER BY id"),
    ("coalesce", "SELECT coalesce(email, name) FROM customers ORDER BY id"),
    ("view over view", "SELECT addr FROM mask_contacts2 ORDER BY addr"),
]


@pytest.mark.parametrize("sql", [q for _, q in EXPRESSIONS], ids=[i for i, _ in EXPRESSIONS])
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_expressions_of_a_masked_column_are_masked(mdsn, sql, binary):
    rows = one(mdsn, sql, binary=binary)
    assert len(rows) == CUSTOMER_ROWS
    reals = {c["email"] for c in CUSTOMERS} | {c["email"].upper() for c in CUSTOMERS}
    for (got,) in rows:
        assert got not in reals
        assert not EMAIL.search(got or ""), got


def test_aggregates_of_a_masked_column_are_masked(mdsn):
    (agg, joined, n) = one(mdsn, "SELECT max(email), string_agg(email, ','), length(min(email)) FROM customers")[0]
    assert not EMAIL.search(agg) and not EMAIL.search(joined)
    assert n is None  # an integer derived from a masked column keeps its type: NULL


def test_other_columns_pass_untouched(mdsn):
    rows = one(mdsn, "SELECT id, name FROM customers ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [(i + 1, c["name"]) for i, c in enumerate(CUSTOMERS)]


def test_styles(mdsn):
    rows = one(mdsn, "SELECT ssn, card, card FROM customers ORDER BY id")
    assert {r[0] for r in rows} == {REDACT(c["ssn"]) for c in CUSTOMERS}
    hashes = [r[1] for r in rows]
    assert all(r[1] == r[2] for r in rows)  # stable within a result...
    assert hashes == [r[0] for r in one(mdsn, "SELECT card FROM customers ORDER BY id")]  # ...and across queries
    assert len(set(hashes)) == len({c["card"] for c in CUSTOMERS})  # distinct values stay distinct
    assert not any(c["card"] in h for c, h in zip(CUSTOMERS, hashes))
    people = one(mdsn, "SELECT ssn, salary, badge FROM mask_people ORDER BY id")
    assert people[0][0] == REDACT("123-45-6789") and people[0][1] is None and people[1][1] is None
    assert people[1][2] == 7


def test_partitions_and_inheritance_share_their_masks(mdsn):
    # a rule on the partitioned table covers a partition read directly, and a rule on a child
    # covers its rows read through the parent
    assert one(mdsn, "SELECT card FROM mask_orders_eu") == [(REDACT("x"),)]
    assert one(mdsn, "SELECT card || '' FROM mask_orders_eu") == [(REDACT("x"),)]
    assert one(mdsn, "SELECT card FROM mask_orders") == [(REDACT("x"),)]
    assert one(mdsn, "SELECT token FROM mask_base") == [(REDACT("x"),)]


def test_schema_qualified_glob(mdsn):
    assert one(mdsn, "SELECT id, secret FROM mask_vault.keys") == [(1, REDACT("hunter2-secret-value"))]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_non_text_type_derived_from_masked_column_becomes_null(mdsn, binary):
    rows = one(mdsn, "SELECT length(email), id FROM customers ORDER BY id", binary=binary)
    assert all(r[0] is None for r in rows) and [r[1] for r in rows] == list(range(1, CUSTOMER_ROWS + 1))


# ------------------------------------------------------------------ detectors

def test_detectors_mask_the_match_not_the_whole_value(mdsn):
    rows = one(mdsn, "SELECT note FROM customers ORDER BY id")
    for (got,), real in zip(rows, CUSTOMERS):
        assert not EMAIL.search(got), got
        # the rest of the text survives
        assert got.split(" ")[0] == real["note"].split(" ")[0] or "@" in real["note"].split(" ")[0]


def test_detectors_apply_to_literals_and_any_type(mdsn):
    (text, card_num), = one(mdsn, "SELECT 'write to bob@example.com today', 4111111111111111::bigint")
    assert text == f"write to {REDACT('bob@example.com')} today"
    assert card_num is None  # a Luhn-valid card number as a number: not text, so NULL
    (text,), = one(mdsn, "SELECT 'write to bob@example.com today'", binary=True)
    assert "bob@example.com" not in text


# ------------------------------------------------------------------ protocols and clients

def test_extended_protocol_prepared_and_parameters(mdsn):
    with psycopg.connect(mdsn) as conn:
        for _ in range(3):  # psycopg prepares server-side after repeated use
            got = conn.execute("SELECT email, name FROM customers WHERE id = %s", (1,), prepare=True).fetchone()
            assert_partial(got[0], CUSTOMERS[0]["email"]) and got[1] == CUSTOMERS[0]["name"]
        with conn.pipeline():
            c1 = conn.execute("SELECT email FROM customers WHERE id = %s", (2,))
            c2 = conn.execute("SELECT ssn FROM customers WHERE id = %s", (3,))
        assert_partial(c1.fetchone()[0], CUSTOMERS[1]["email"])
        assert c2.fetchone()[0] == REDACT(CUSTOMERS[2]["ssn"])


def test_cursor_fetch(mdsn):
    with psycopg.connect(mdsn) as conn:
        conn.execute("DECLARE c CURSOR FOR SELECT email, upper(email) FROM customers ORDER BY id")
        rows = conn.execute("FETCH 5 FROM c").fetchall()
        assert len(rows) == 5
        for (a, b), real in zip(rows, CUSTOMERS):
            assert_partial(a, real["email"])
            assert b.endswith(real["email"][-4:].upper()) and not EMAIL.search(b)  # lineage of the cursor's query
        with conn.cursor(name="server_side") as cur:  # psycopg's named cursor: DECLARE + FETCH
            cur.execute("SELECT email FROM customers ORDER BY id")
            assert all(not EMAIL.search(r[0]) for r in cur.fetchall())


def test_sql_prepared_statement_execute(mdsn):
    with psycopg.connect(mdsn) as conn:
        conn.execute("PREPARE q(int) AS SELECT lower(email), id FROM customers WHERE id = $1")
        got, ident = conn.execute("EXECUTE q(2)").fetchone()
    assert ident == 2 and got != CUSTOMERS[1]["email"].lower() and got.endswith(CUSTOMERS[1]["email"][-4:])


def test_planner_statistics_do_not_show_masked_values(mgw, mdsn):
    with psycopg.connect(mdsn, autocommit=True) as conn:
        conn.execute("ANALYZE mask_people")
        rows = conn.execute("SELECT attname, most_common_vals::text, histogram_bounds::text FROM pg_stats "
                            "WHERE tablename = 'mask_people'").fetchall()
    assert {r[0] for r in rows} >= {"ssn", "salary"}  # the catalog's own columns pass
    text = repr(rows)
    assert "123-45-6789" not in text and "987-65-4320" not in text and "1000.50" not in text


def test_asyncpg(mdsn):
    async def run():
        conn = await asyncpg.connect(mdsn)
        try:
            rows = await conn.fetch("SELECT email, ssn, length(email) AS n, id FROM customers ORDER BY id")
            stmt = await conn.prepare("SELECT contact FROM mask_contacts WHERE id = $1")
            via_view = [await stmt.fetchval(i) for i in (1, 2)]
            note = await conn.fetchval("SELECT note FROM customers WHERE id = $1", 1)
            return rows, via_view, note
        finally:
            await conn.close()

    rows, via_view, note = asyncio.run(run())
    assert len(rows) == CUSTOMER_ROWS
    for r, real in zip(rows, CUSTOMERS):
        assert_partial(r["email"], real["email"])
        assert r["ssn"] == REDACT(real["ssn"]) and r["n"] is None and r["id"] >= 1
    assert_partial(via_view[0], CUSTOMERS[0]["email"])
    assert not EMAIL.search(note)


@pytest.mark.parametrize("sql", [q for _, q in EMAIL_QUERIES + EXPRESSIONS], ids=[i for i, _ in EMAIL_QUERIES + EXPRESSIONS])
def test_every_path_through_asyncpg(mdsn, sql):
    async def run():
        conn = await asyncpg.connect(mdsn)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert len(rows) == CUSTOMER_ROWS
    reals = {c["email"] for c in CUSTOMERS} | {c["email"].upper() for c in CUSTOMERS}
    assert all(r[0] not in reals and not EMAIL.search(r[0]) for r in rows)


@pytest.mark.parametrize("sql", [q for _, q in EMAIL_QUERIES + EXPRESSIONS], ids=[i for i, _ in EMAIL_QUERIES + EXPRESSIONS])
def test_every_path_through_psql(mdsn, sql):
    p = subprocess.run(["psql", mdsn, "-X", "-A", "-t", "-c", sql], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == CUSTOMER_ROWS and not EMAIL.search(p.stdout)
    assert not any(c["email"] in p.stdout for c in CUSTOMERS)


def test_psql_output_and_meta_commands(mgw, mdsn):
    p = subprocess.run(["psql", mdsn, "-X", "-A", "-t", "-c", "SELECT email, ssn, note FROM customers",
                        "-c", r"\d customers"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for c in CUSTOMERS:
        assert c["email"] not in p.stdout and c["ssn"] not in p.stdout
    assert "email" in p.stdout and "text" in p.stdout  # \d is the catalog, shown as it is


@pytest.mark.parametrize("options", ["", "WITH (FORMAT csv, HEADER)", "WITH (FORMAT csv, DELIMITER ';', QUOTE '''')"])
def test_copy_to_stdout_text_and_csv(mdsn, options):
    with psycopg.connect(mdsn) as conn:
        buf = io.BytesIO()
        with conn.cursor().copy(f"COPY (SELECT id, email, note, ssn FROM customers ORDER BY id) TO STDOUT {options}") as cp:
            for chunk in cp:
                buf.write(chunk)
    text = buf.getvalue().decode()
    if "csv" in options:
        delim = ";" if "DELIMITER" in options else ","
        quote = "'" if "QUOTE" in options else '"'
        rows = list(csv.reader(io.StringIO(text), delimiter=delim, quotechar=quote))
        if "HEADER" in options:
            assert rows[0] == ["id", "email", "note", "ssn"]
            rows = rows[1:]
    else:
        rows = [line.split("\t") for line in text.splitlines()]
    assert len(rows) == CUSTOMER_ROWS and all(len(r) == 4 for r in rows)
    for r, real in zip(rows, CUSTOMERS):
        assert_partial(r[1], real["email"])
        assert not EMAIL.search(r[2]) and r[3] == REDACT(real["ssn"])


def test_copy_table_and_binary(mdsn):
    with psycopg.connect(mdsn) as conn:
        with conn.cursor().copy("COPY customers (id, email, card) TO STDOUT (FORMAT binary)") as cp:
            cp.set_types(["int4", "text", "text"])
            rows = list(cp.rows())
        with conn.cursor().copy("COPY mask_people TO STDOUT") as cp:
            people = [bytes(c).decode() for c in cp]
    assert len(rows) == CUSTOMER_ROWS
    for (i, email, card), real in zip(sorted(rows), CUSTOMERS):
        assert_partial(email, real["email"]) and card != real["card"]
    assert "123-45-6789" not in "".join(people) and "1000.50" not in "".join(people)


def test_nothing_raw_reaches_the_log(mgw, mdsn):
    one(mdsn, "SELECT * FROM customers")
    log = mgw.log()
    for c in CUSTOMERS[:10]:
        assert c["email"] not in log and c["card"] not in log and c["ssn"] not in log


def test_denied_statements_still_denied_in_a_masked_session(mdsn):
    with psycopg.connect(mdsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE customers")
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (CUSTOMER_ROWS,)


# ------------------------------------------------------------------ copying masked values elsewhere

COPIES = [
    ("create table as", "CREATE TEMP TABLE mask_copy AS SELECT ssn FROM mask_people"),
    ("select into", "SELECT id, upper(ssn) AS s INTO TEMP mask_copy2 FROM mask_people"),
    ("insert select", "INSERT INTO mask_people (id, ssn) SELECT id + 100, ssn FROM mask_people"),
    ("update from", "UPDATE mask_people SET badge = length(p.ssn) FROM mask_people p WHERE p.id = mask_people.id"),
    ("cte insert", "WITH s AS (SELECT ssn FROM mask_people) INSERT INTO mask_people (id, ssn) SELECT 7, ssn FROM s"),
    ("set_config", "SELECT set_config('wiregate.x', ssn, false) FROM mask_people"),
    ("pg_notify", "SELECT pg_notify('ch', ssn) FROM mask_people"),
    ("large object", "SELECT lo_from_bytea(0, convert_to(ssn, 'UTF8')) FROM mask_people"),
    ("do block", "DO $$ BEGIN RAISE NOTICE '%', (SELECT ssn FROM mask_people LIMIT 1); END $$"),
    ("materialized view", "CREATE MATERIALIZED VIEW mask_mv AS SELECT ssn FROM mask_people"),
]


@pytest.mark.parametrize("sql", [q for _, q in COPIES], ids=[i for i, _ in COPIES])
def test_copying_masked_values_where_masking_cannot_follow_is_refused(mdsn, sql):
    with psycopg.connect(mdsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="blocked by mask rules"):
            conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM mask_people").fetchone() == (2,)


def test_writes_that_copy_nothing_masked_pass(mdsn):
    with psycopg.connect(mdsn) as conn:  # rolled back at the end
        conn.execute("UPDATE mask_people SET badge = badge + 1 WHERE id = 2")
        conn.execute("INSERT INTO mask_people (id, ssn, badge) SELECT id + 10, 'n/a', badge FROM mask_people")
        conn.execute("CREATE TEMP TABLE mask_ids AS SELECT id, badge FROM mask_people")
        assert conn.execute("SELECT count(*) FROM mask_ids").fetchone() == (4,)
        conn.rollback()


def test_error_texts_do_not_quote_masked_values(mdsn):
    with psycopg.connect(mdsn) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            conn.execute("SELECT ssn::int FROM mask_people")
        assert "123-45-6789" not in str(e.value) and "987-65-4320" not in str(e.value)
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedColumn, match="nope"):  # errors that hold no data stay
            conn.execute("SELECT nope FROM mask_people")


def test_mcp_database_tool_gets_masked_rows(mgw):
    """The reference MCP PostgreSQL server (node-postgres underneath) reading through a masked session."""
    import json

    from tests.e2e.test_postgres_mcp import call

    dsn = mgw.dsn("agent", mgw.token("agent", ["dev"]), "masked", sslmode="disable")
    [(failed, text)] = asyncio.run(asyncio.wait_for(call(dsn, [
        ("query", {"sql": "SELECT email, ssn, note FROM customers ORDER BY id LIMIT 3"})]), 60))
    assert not failed, text
    rows = json.loads(text)
    assert len(rows) == 3
    for row, real in zip(rows, CUSTOMERS):
        assert_partial(row["email"], real["email"])
        assert row["ssn"] == REDACT(real["ssn"]) and not EMAIL.search(row["note"])


def test_sessions_starting_together_read_the_catalog_once(pg, tmp_path):
    g = GatewayProcess(tmp_path, targets=[pg_target("masked", pg, tls="disable")], rules=RULES[:2],
                       env={PW_ENV: pg.app_password}).start()
    try:
        dsn = g.dsn("alice", g.token("alice", ["dev"]), "masked", sslmode="disable")

        async def run():
            conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(8)))
            try:
                return await asyncio.gather(*(c.fetchval("SELECT ssn FROM customers ORDER BY id LIMIT 1")
                                              for c in conns))
            finally:
                await asyncio.gather(*(c.close() for c in conns))

        assert set(asyncio.run(run())) == {REDACT("x")}
        assert g.log().count("catalog read") == 1, g.log()
    finally:
        g.stop()
