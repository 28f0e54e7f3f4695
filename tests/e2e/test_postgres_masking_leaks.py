"""Red team: every way we could think of to get a masked value out through the gateway.

The bar (issue 3): a value that a mask rule covers must never reach the client, the recording or
a log, however the query reaches it. Each test runs one technique as the masked caller and
searches *everything* the client received (the raw wire bytes where the test speaks the protocol
itself through ``Wire``; every value, notice, notification and error field otherwise) and the
gateway's log for the raw values, their digits, and their hex and base64 forms. Each test also
checks that the technique really ran (rows came back, the notification or the error arrived), so
a pass means "masked", never "nothing happened". Where a technique first stores or copies the value
somewhere, the gateway refusing that statement (42501 "wiregate: blocked by mask rules...") is the
other safe outcome: the value then never leaves.

Known, documented limits are not tested here (they leak by design): filtering on a masked column
(``WHERE ssn LIKE '1%'``, ``ORDER BY``, ``CASE WHEN ssn ... THEN 'a'``), timing, and detector-only
values transformed so no detector recognises them (``replace(note, '@', ' at ')``).

The module's own objects are named ``leak_*`` (the ``customers`` table is other modules' and is
not touched) and dropped at the end.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import subprocess

import asyncpg
import psycopg
import pytest

from tests.e2e.conftest import PW_ENV, pg_target
from tests.e2e.gateway_process import GatewayProcess

TARGET = "leaky"

SETUP = """
SET ROLE app;
CREATE TABLE leak_users (id int PRIMARY KEY, email text, ssn text, note text);
INSERT INTO leak_users VALUES
  (1, 'zed.quill@example.org', '123-45-6789', 'reach z.home@example.net after six'),
  (2, 'amy.rook@example.com', '987-65-4320', 'no contact details'),
  (3, 'kit.vole@example.io', 'x"0123456789"y', 'n/a');
CREATE TABLE leak_sink (id int, v text);
CREATE TABLE leak_parent (id int, email text, ssn text, note text);
CREATE TABLE leak_shadow (v text);
INSERT INTO leak_shadow VALUES ('harmless');
CREATE SCHEMA leak_vault;
CREATE TABLE leak_vault.leak_shadow (v text);
INSERT INTO leak_vault.leak_shadow VALUES ('vault-secret-7Q4Z');
-- objects that exist before the gateway starts (an application's functions): the gateway
-- cannot see what they read
CREATE FUNCTION leak_fn() RETURNS text LANGUAGE sql STABLE AS $$SELECT ssn FROM leak_users WHERE id = 1$$;
CREATE FUNCTION leak_op(int, int) RETURNS text LANGUAGE sql STABLE AS $$SELECT ssn FROM leak_users WHERE id = $1$$;
CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = leak_op);
CREATE VIEW leak_fv AS SELECT leak_fn() AS s;
RESET ROLE;
"""

TEARDOWN = """
DROP TABLE IF EXISTS leak_users, leak_sink, leak_parent, leak_shadow, leak_copy, leak_renamed CASCADE;
DROP MATERIALIZED VIEW IF EXISTS leak_mv;
DROP VIEW IF EXISTS leak_v, leak_fv;
DROP FUNCTION IF EXISTS leak_fn(), leak_op(int, int), leak_fn2(), leak_trg() CASCADE;
DROP SEQUENCE IF EXISTS leak_seq;
DROP SCHEMA IF EXISTS leak_vault CASCADE;
SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = 424201;
"""

RULES = [
    {"name": "mask-email", "action": "mask", "columns": ["leak_users.email"], "style": "partial"},
    # ssn on purpose without the ssn detector: column masking on its own
    {"name": "mask-ssn", "action": "mask", "columns": ["leak_users.ssn", "leak_vault.leak_shadow.v"],
     "style": "redact"},
    {"name": "pii-text", "action": "mask", "detectors": ["email"], "style": "redact"},
]

SSNS = ["123-45-6789", "987-65-4320", 'x"0123456789"y']
EMAILS = ["zed.quill@example.org", "amy.rook@example.com", "kit.vole@example.io"]
VAULT = "vault-secret-7Q4Z"
NOTE_EMAIL = "z.home@example.net"  # only the email detector covers it


def _forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw).rstrip(b"=")]


# every form of a column-masked value that must never show: the value, its hex and base64, the
# digits of an ssn (a number derived from it), the local part of an email
FORBIDDEN: list[bytes] = [b"123456789", b"987654320", b"0123456789", b"zed.quill", b"amy.rook", b"kit.vole"]
for _v in SSNS + EMAILS + [VAULT]:
    FORBIDDEN += _forms(_v)
FORBIDDEN.append(NOTE_EMAIL.encode())


def leaks(blob: bytes | str) -> list[bytes]:
    data = blob.encode() if isinstance(blob, str) else bytes(blob)
    return [f for f in FORBIDDEN if f in data]


def flatten(obj) -> bytes:
    """Every value of a result (nested lists, tuples, dicts, bytes, str...) as one searchable blob."""
    if obj is None:
        return b"\x00"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape")
    if isinstance(obj, dict):
        return b"\x00".join(flatten(k) + b"=" + flatten(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) or hasattr(obj, "items") and hasattr(obj, "keys"):
        return b"\x00".join(flatten(x) for x in obj)
    return repr(obj).encode()


# ------------------------------------------------------------------------------------ wire client


def _msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!I", len(body) + 4) + body


def query(sql: str | bytes) -> bytes:
    return _msg(b"Q", (sql.encode() if isinstance(sql, str) else sql) + b"\x00")


def parse(name: bytes, sql: str | bytes) -> bytes:
    return _msg(b"P", name + b"\x00" + (sql.encode() if isinstance(sql, str) else sql) + b"\x00" + b"\x00\x00")


def bind(portal: bytes, statement: bytes, result_formats: tuple[int, ...] = ()) -> bytes:
    body = portal + b"\x00" + statement + b"\x00" + b"\x00\x00" + b"\x00\x00"
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return _msg(b"B", body)


def describe(kind: bytes, name: bytes) -> bytes:
    return _msg(b"D", kind + name + b"\x00")


def execute(portal: bytes = b"", max_rows: int = 0) -> bytes:
    return _msg(b"E", portal + b"\x00" + struct.pack("!i", max_rows))


def function_call(oid: int, args: list[bytes], result_format: int = 0) -> bytes:
    body = struct.pack("!Ihh", oid, 0, len(args))
    for a in args:
        body += struct.pack("!i", len(a)) + a
    return _msg(b"F", body + struct.pack("!h", result_format))


SYNC = _msg(b"S", b"")


class Reply:
    """Everything one exchange brought back: the raw bytes and the messages in them."""

    def __init__(self, raw: bytes, messages: list[tuple[bytes, bytes]], closed: bool):
        self.raw = raw
        self.messages = messages
        self.closed = closed

    def of(self, t: bytes) -> list[bytes]:
        return [b for k, b in self.messages if k == t]

    @property
    def rows(self) -> list[list[bytes | None]]:
        out = []
        for body in self.of(b"D"):
            n = struct.unpack_from("!h", body)[0]
            pos, row = 2, []
            for _ in range(n):
                ln = struct.unpack_from("!i", body, pos)[0]
                pos += 4
                row.append(None if ln < 0 else body[pos:pos + ln])
                pos += max(ln, 0)
            out.append(row)
        return out

    @property
    def errors(self) -> list[dict[str, str]]:
        return [_fields(b) for b in self.of(b"E")]

    @property
    def notices(self) -> list[dict[str, str]]:
        return [_fields(b) for b in self.of(b"N")]


def _fields(body: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(body) and body[pos] != 0:
        end = body.index(b"\x00", pos + 1)
        out[chr(body[pos])] = body[pos + 1:end].decode("utf-8", "replace")
        pos = end + 1
    return out


class Wire:
    """A minimal PostgreSQL frontend over plain TCP (the gateway accepts a token without TLS from
    loopback): the test sees every byte the gateway sends, and can send any message sequence."""

    def __init__(self, gw: GatewayProcess, token: str, user: str = "alice"):
        self.sock = socket.create_connection((gw.host, gw.port), timeout=15)
        self.buf = b""
        params = b"user\x00" + user.encode() + b"\x00database\x00" + TARGET.encode() + b"\x00\x00"
        body = struct.pack("!I", 196608) + params
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        t, b = self._read()
        assert t == b"R" and b[:4] == b"\x00\x00\x00\x03", (t, b)
        self.sock.sendall(_msg(b"p", token.encode() + b"\x00"))
        start = self.exchange(b"")
        assert not start.errors, start.errors
        self.startup = start

    def _read(self) -> tuple[bytes, bytes] | None:
        while True:
            if len(self.buf) >= 5:
                ln = struct.unpack_from("!I", self.buf, 1)[0]
                if len(self.buf) >= ln + 1:
                    t, body = self.buf[:1], self.buf[5:ln + 1]
                    self.buf = self.buf[ln + 1:]
                    return t, body
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buf += chunk

    def exchange(self, data: bytes, readies: int = 1, until: bytes | None = None) -> Reply:
        """Send ``data``, read until ``readies`` ReadyForQuery (or a message of type ``until``)."""
        if data:
            self.sock.sendall(data)
        raw, messages, seen, closed = bytearray(), [], 0, False
        while seen < readies:
            got = self._read()
            if got is None:
                closed = True
                break
            t, body = got
            raw += _msg(t, body)
            messages.append((t, body))
            if t == b"Z":
                seen += 1
            if until is not None and t == until:
                break
        return Reply(bytes(raw), messages, closed)

    def q(self, sql: str | bytes) -> Reply:
        return self.exchange(query(sql))

    def close(self) -> None:
        try:
            self.sock.sendall(_msg(b"X", b""))
        except OSError:
            pass
        self.sock.close()


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def mgw(pg, tmp_path_factory):
    pg.psql(SETUP, dbname=pg.app_db)
    g = GatewayProcess(tmp_path_factory.mktemp("leak-gateway"),
                       targets=[pg_target(TARGET, pg, tls="require")], rules=RULES,
                       env={PW_ENV: pg.app_password}).start()
    yield g
    g.stop()
    pg.psql(TEARDOWN, dbname=pg.app_db)


@pytest.fixture(scope="module")
def token(mgw) -> str:
    return mgw.token("alice", ["dev"])


@pytest.fixture(scope="module")
def dsn(mgw, token) -> str:
    return mgw.dsn("alice", token, TARGET, sslmode="disable")


@pytest.fixture
def wire(mgw, token):
    w = Wire(mgw, token)
    yield w
    w.close()


@pytest.fixture
def clean(mgw):
    """``clean(blob, what)``: assert neither ``blob`` nor the gateway's log holds a masked value."""
    def check(blob, what: str = "the client") -> None:
        found = leaks(blob if isinstance(blob, (bytes, str)) else flatten(blob))
        assert not found, f"masked values reached {what}: {found}"
        in_log = leaks(mgw.log())
        assert not in_log, f"masked values reached the gateway log: {in_log}"
    return check


class Collect:
    """A psycopg connection's notices and notifications, kept for searching."""

    def __init__(self, conn: psycopg.Connection):
        self.items: list[object] = []
        conn.add_notice_handler(lambda d: self.items.append(_diag(d)))
        conn.add_notify_handler(lambda n: self.items.append((n.channel, n.payload)))


def _diag(d) -> dict[str, object]:
    names = ("severity", "sqlstate", "message_primary", "message_detail", "message_hint", "context",
             "internal_query", "statement_position", "schema_name", "table_name", "column_name",
             "datatype_name", "constraint_name")
    return {n: getattr(d, n, None) for n in names}


def refused(r: "Reply | list[dict]") -> bool:
    """Whether the gateway refused the statement as a whole (42501 "wiregate: ..."): a safe outcome
    for a technique that would move or expose a masked value."""
    errors = r.errors if isinstance(r, Reply) else r
    return any((e.get("C") or e.get("sqlstate")) == "42501"
               and str(e.get("M") or e.get("message_primary") or "").startswith("wiregate:") for e in errors)


def run_error(dsn: str, *sqls: str) -> tuple[list[dict[str, object]], list[object]]:
    """Run statements one by one on one connection; the diagnostics of those that fail, and notices."""
    errors: list[dict[str, object]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        col = Collect(conn)
        for sql in sqls:
            try:
                conn.execute(sql)
            except psycopg.Error as e:
                errors.append(_diag(e.diag) | {"str": str(e)})
    return errors, col.items


# ------------------------------------------------------------------------------------ derived data

# every query returns rows derived from a masked column; none may carry the value
DERIVED = [
    ("plain", "SELECT email, ssn FROM leak_users"),
    ("bytea cast", "SELECT email::bytea, ssn::bytea FROM leak_users"),
    ("json", "SELECT to_json(email), to_jsonb(ssn), row_to_json(u) FROM leak_users u"),
    ("array", "SELECT ARRAY[email, ssn] FROM leak_users"),
    ("row constructor", "SELECT ROW(email, ssn) FROM leak_users"),
    ("whole row", "SELECT u FROM leak_users u"),
    ("whole row subquery", "SELECT (SELECT u FROM leak_users u WHERE id = 1)"),
    ("field of whole row", "SELECT (u).ssn, (u).email FROM leak_users u"),
    ("star of whole row", "SELECT (u).* FROM leak_users u"),
    ("base64", "SELECT encode(convert_to(ssn, 'UTF8'), 'base64'), encode(email::bytea, 'hex') FROM leak_users"),
    ("format", "SELECT format('%s|%s', email, ssn), quote_literal(ssn), quote_ident(email) FROM leak_users"),
    ("string_to_array", "SELECT string_to_array(ssn, '-'), array_to_string(ARRAY[ssn], ',') FROM leak_users"),
    ("regexp_split_to_table", "SELECT regexp_split_to_table(ssn, '') FROM leak_users"),
    ("unnest array_agg", "SELECT unnest(array_agg(ssn)) FROM leak_users"),
    ("json_agg", "SELECT json_agg(u), jsonb_agg(email) FROM leak_users u"),
    ("jsonb_build_object", "SELECT jsonb_build_object('s', ssn, 'e', email) ->> 's' FROM leak_users"),
    ("jsonb path", "SELECT jsonb_path_query(to_jsonb(u), '$.ssn') FROM leak_users u"),
    ("jsonb_each_text", "SELECT * FROM jsonb_each_text((SELECT to_jsonb(u) FROM leak_users u WHERE id = 1))"),
    ("json_to_record", "SELECT * FROM json_to_record((SELECT row_to_json(u) FROM leak_users u WHERE id = 1))"
                       " AS x(id int, ssn text, email text)"),
    ("populate_recordset", "SELECT * FROM jsonb_populate_recordset(NULL::leak_users,"
                           " (SELECT jsonb_agg(u) FROM leak_users u))"),
    ("xml", "SELECT xmlelement(name s, ssn), xmlforest(email, ssn) FROM leak_users"),
    ("xpath", "SELECT (xpath('/r/text()', xmlelement(name r, ssn)))[1]::text FROM leak_users"),
    ("md5", "SELECT md5(ssn), md5(email), sha256(ssn::bytea) FROM leak_users"),
    ("translate", "SELECT translate(ssn, '0123456789', 'abcdefghij'), reverse(email) FROM leak_users"),
    ("lateral subquery", "SELECT x FROM leak_users, LATERAL (SELECT ssn || '') s(x)"),
    ("lateral unnest", "SELECT x FROM leak_users CROSS JOIN LATERAL unnest(ARRAY[ssn, email]) x"),
    ("lateral star", "SELECT * FROM leak_users u, LATERAL regexp_split_to_table(u.ssn, '-') part"),
    ("rows from", "SELECT t.* FROM ROWS FROM (unnest(ARRAY(SELECT ssn FROM leak_users))) t"),
    ("window", "SELECT lag(ssn) OVER (ORDER BY id), first_value(email) OVER (ORDER BY id),"
               " nth_value(ssn, 2) OVER () FROM leak_users"),
    ("grouping sets", "SELECT ssn, email, count(*) FROM leak_users GROUP BY GROUPING SETS ((ssn), (email), ())"),
    ("values", "SELECT * FROM (VALUES ((SELECT ssn FROM leak_users WHERE id = 1)), ('x')) v(x)"),
    ("values join", "SELECT v.i, w.x FROM (VALUES (1), (2)) v(i)"
                    " JOIN LATERAL (SELECT ssn FROM leak_users WHERE id = v.i) w(x) ON true"),
    ("generate_series substr", "SELECT string_agg(substr(ssn, g, 1), '' ORDER BY g) FROM leak_users,"
                               " generate_series(1, 20) g GROUP BY id"),
    ("chr of ascii", "SELECT chr(ascii(substr(ssn, g, 1))) FROM leak_users, generate_series(1, 11) g"),
    ("recursive cte", "WITH RECURSIVE r(x, n) AS (SELECT ssn, 1 FROM leak_users UNION ALL"
                      " SELECT x, n + 1 FROM r WHERE n < 2) SELECT x FROM r"),
    ("union", "SELECT ssn FROM leak_users UNION SELECT email FROM leak_users"),
    ("scalar subquery", "SELECT (SELECT max(ssn) FROM leak_users), (SELECT string_agg(email, ',') FROM leak_users)"),
    ("array subquery", "SELECT ARRAY(SELECT ssn FROM leak_users)"),
    ("table statement", "TABLE leak_users"),
    ("table in from", "SELECT * FROM (TABLE leak_users) t"),
    ("join using", "SELECT * FROM leak_users a JOIN leak_users b USING (ssn)"),
    ("natural join", "SELECT * FROM leak_users a NATURAL JOIN leak_users b"),
    ("collate and casts", "SELECT ssn COLLATE \"C\", ssn::name, ssn::char(20), ssn::varchar FROM leak_users"),
    ("convert encodings", "SELECT convert_from(convert_to(ssn, 'UTF8'), 'LATIN1') FROM leak_users"),
    ("tsvector", "SELECT to_tsvector('simple', email), ssn::tsvector FROM leak_users WHERE id = 1"),
    ("for update", "SELECT ssn || '' FROM leak_users FOR UPDATE"),
    ("distinct on", "SELECT DISTINCT ON (id) ssn, email FROM leak_users ORDER BY id"),
    ("case", "SELECT CASE WHEN id = 1 THEN ssn ELSE email END FROM leak_users"),
    ("overlay", "SELECT overlay(ssn placing '' from 1 for 0), left(email, 40) FROM leak_users"),
    ("very large value", "SELECT repeat(ssn, 100000), email FROM leak_users WHERE id = 1"),
    ("large row, value at the end", "SELECT repeat('x', 3000000), ssn || '' FROM leak_users WHERE id = 1"),
    ("cte with update returning",
     "WITH x AS (UPDATE leak_users SET note = note RETURNING ssn, email) SELECT ssn || '', email FROM x"),
    ("update returning", "UPDATE leak_users SET note = note WHERE id = 1 RETURNING ssn, email || ''"),
    ("insert on conflict returning",
     "INSERT INTO leak_users AS t VALUES (1, 'a', 'b', 'c') ON CONFLICT (id) DO UPDATE SET note = t.note"
     " RETURNING t.ssn || '', t.email"),
]


@pytest.mark.parametrize("sql", [q for _, q in DERIVED], ids=[i for i, _ in DERIVED])
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_derived_data_psycopg(dsn, clean, sql, binary):
    """Derived data (casts, json, arrays, records, string functions, set-returning functions,
    windows, grouping sets, CTEs...) through psycopg in text and binary formats."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.cursor(binary=binary).execute(sql).fetchall()
    assert rows
    clean(rows)


@pytest.mark.parametrize("sql", [q for _, q in DERIVED], ids=[i for i, _ in DERIVED])
def test_derived_data_wire_bytes(wire, clean, sql):
    """The same queries, searching the raw bytes the gateway sent (simple query protocol)."""
    r = wire.q(sql)
    assert not r.errors and r.rows, r.errors
    clean(r.raw)


def test_derived_data_asyncpg(mgw, token, clean):
    """The same queries through asyncpg (extended protocol, binary results where it can)."""
    async def run():
        conn = await asyncpg.connect(mgw.dsn("alice", token, TARGET, sslmode="disable"))
        out = {}
        try:
            for name, sql in DERIVED:
                try:
                    out[name] = [list(r.values()) for r in await conn.fetch(sql)]
                except asyncpg.PostgresError as e:
                    out[name] = e
        finally:
            await conn.close()
        return out

    results = asyncio.run(run())
    failed = {k: v for k, v in results.items() if isinstance(v, Exception)}
    assert not failed, failed
    leaked = {k: leaks(flatten(v)) for k, v in results.items() if leaks(flatten(v))}
    assert not leaked, f"masked values reached asyncpg: {leaked}"
    clean(b"")


def test_char_by_char_codes_are_null(wire, clean):
    """ascii(substr(ssn, i, 1)) reads a value one character code at a time: every code must be NULL."""
    r = wire.q("SELECT g, ascii(substr(ssn, g, 1)), get_byte(ssn::bytea, g - 1), length(ssn)"
               " FROM leak_users, generate_series(1, 11) g WHERE id = 1 ORDER BY g")
    assert len(r.rows) == 11
    assert all(row[1] is None and row[2] is None and row[3] is None for row in r.rows), r.rows
    clean(r.raw)


def test_psql(mgw, token, clean):
    """psql: several techniques in one script, including \\copy and \\gset."""
    script = (
        "SELECT ssn || '', to_json(email) FROM leak_users;\n"
        "\\copy (SELECT ssn || '', email FROM leak_users) TO STDOUT\n"
        "SELECT ssn AS s FROM leak_users WHERE id = 1 \\gset\n"
        "\\echo :s\n"
        "SELECT u FROM leak_users u;\n"
    )
    p = subprocess.run(["psql", mgw.dsn("alice", token, TARGET), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
                       input=script, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") >= 9
    clean(p.stdout + p.stderr)


# ------------------------------------------------------------------------------------ protocol games


def test_describe_less_execute_text_and_binary(wire, clean):
    """Extended protocol: Bind/Execute without any Describe, with text then binary result formats
    for the same statement, and a portal executed in two steps."""
    sql = "SELECT ssn || '', email, u FROM leak_users u"
    r = wire.exchange(parse(b"st", sql) + bind(b"", b"st") + execute() + bind(b"", b"st", (1,)) + execute()
                      + bind(b"pp", b"st", (0, 1, 1)) + execute(b"pp", 1) + execute(b"pp") + SYNC)
    assert not r.errors and len(r.rows) == 9, r.errors
    clean(r.raw)


def test_pipeline_mixing_statements_and_errors(wire, clean):
    """A pipeline of masked and unmasked statements, an error in the middle, a new Sync block."""
    r = wire.exchange(
        parse(b"", "SELECT 'harmless'::text") + bind(b"", b"") + describe(b"P", b"") + execute()
        + parse(b"", "SELECT ssn || '' FROM leak_users") + bind(b"", b"") + execute()
        + parse(b"", "SELECT 1/0") + bind(b"", b"") + execute()
        + parse(b"", "SELECT email || '' FROM leak_users") + bind(b"", b"") + execute() + SYNC
        + parse(b"", "SELECT email || '' FROM leak_users") + bind(b"", b"", (1,)) + execute() + SYNC,
        readies=2)
    assert len(r.errors) == 1 and len(r.rows) == 1 + 3 + 3, (r.errors, r.rows)
    clean(r.raw)


def test_multi_statement_simple_query(wire, clean):
    """One Query mixing unmasked, masked, empty, COPY and erroring statements."""
    r = wire.q("SELECT 'a'::text; SELECT ssn || '' FROM leak_users;; SELECT 1; "
               "COPY (SELECT email || '' FROM leak_users) TO STDOUT; SELECT upper(ssn) FROM leak_users; "
               "SELECT 1/0; SELECT ssn || '' FROM leak_users")
    assert len(r.errors) == 1 and len(r.rows) >= 1 + 3 + 1 + 3
    clean(r.raw)


def test_named_statement_reparsed_under_the_same_name(wire, clean):
    """Parse "s1" with a masked query; a second Parse "s1" (harmless) fails at the server
    (the name exists), so Bind "s1" still runs the masked query."""
    wire.exchange(parse(b"s1", "SELECT ssn || '' AS x FROM leak_users") + SYNC)
    again = wire.exchange(parse(b"s1", "SELECT 'harmless'::text AS x") + SYNC)
    assert again.errors and again.errors[0]["C"] == "42P05"
    r = wire.exchange(bind(b"", b"s1") + execute() + SYNC)
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_protocol_statement_replaced_by_sql_prepare_after_discard(wire, clean):
    """Parse "s2" (harmless), DISCARD ALL, then SQL PREPARE s2 AS <masked query>: a Bind of "s2"
    through the extended protocol runs the new statement."""
    wire.exchange(parse(b"s2", "SELECT 'harmless'::text AS x") + SYNC)
    assert not wire.q("DISCARD ALL").errors
    assert not wire.q("PREPARE s2 AS SELECT ssn || '' AS x FROM leak_users").errors
    r = wire.exchange(bind(b"", b"s2") + execute() + SYNC)
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_protocol_statement_replaced_by_sql_prepare_after_deallocate(wire, clean):
    """As above with DEALLOCATE of the protocol-level statement by SQL."""
    wire.exchange(parse(b"s3", "SELECT 'harmless'::text AS x") + SYNC)
    assert not wire.q("DEALLOCATE s3").errors
    assert not wire.q("PREPARE s3 AS SELECT ssn || '' AS x FROM leak_users").errors
    r = wire.exchange(bind(b"", b"s3", (1,)) + execute() + SYNC)
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_sql_prepare_reused_by_protocol_bind(wire, clean):
    """SQL PREPARE, then the statement bound through the extended protocol by its name."""
    assert not wire.q("PREPARE ps AS SELECT ssn || '' AS x, email FROM leak_users").errors
    r = wire.exchange(bind(b"", b"ps") + execute() + bind(b"", b"ps", (1,)) + describe(b"P", b"") + execute() + SYNC)
    assert len(r.rows) == 6, r.errors
    clean(r.raw)


def test_sql_prepare_execute(wire, clean):
    """PREPARE / EXECUTE, and EXECUTE through the extended protocol."""
    assert not wire.q("PREPARE p1 AS SELECT ssn || '' AS x, upper(email) FROM leak_users").errors
    r = wire.q("EXECUTE p1")
    r2 = wire.exchange(parse(b"", "EXECUTE p1") + bind(b"", b"", (1,)) + execute() + SYNC)
    assert len(r.rows) == 3 and len(r2.rows) == 3
    clean(r.raw + r2.raw)


def test_prepare_name_reused_by_a_failing_prepare(wire, clean):
    """PREPARE p AS <masked>; a second PREPARE p AS <harmless> fails (the name exists);
    EXECUTE p still runs the masked query."""
    assert not wire.q("PREPARE pdup AS SELECT ssn || '' AS x FROM leak_users").errors
    dup = wire.q("PREPARE pdup AS SELECT 'harmless'::text AS x")
    assert dup.errors and dup.errors[0]["C"] == "42P05"
    r = wire.q("EXECUTE pdup")
    assert len(r.rows) == 3
    clean(r.raw)


def test_cursor_name_reused_by_a_failing_declare(wire, clean):
    """DECLARE c WITH HOLD FOR <masked>; a second DECLARE c FOR <harmless> fails (the cursor
    exists); FETCH c still reads the masked query."""
    assert not wire.q("DECLARE cdup CURSOR WITH HOLD FOR SELECT ssn || '' AS x FROM leak_users").errors
    dup = wire.q("BEGIN; DECLARE cdup CURSOR FOR SELECT 'harmless'::text AS x; COMMIT")
    assert dup.errors and dup.errors[0]["C"] == "42P03"
    wire.q("ROLLBACK")
    r = wire.q("FETCH ALL FROM cdup")
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_cursor_declared_after_a_failing_statement(wire, clean):
    """A Query whose first statement fails never runs its DECLARE: FETCH reads the earlier cursor."""
    assert not wire.q("DECLARE cfail CURSOR WITH HOLD FOR SELECT ssn || '' AS x FROM leak_users").errors
    bad = wire.q("SELECT 1/0; DECLARE cfail CURSOR WITH HOLD FOR SELECT 'harmless'::text AS x")
    assert bad.errors
    r = wire.q("FETCH ALL FROM cfail")
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_cursors(dsn, wire, clean):
    """DECLARE / FETCH / MOVE, FETCH through the extended protocol, the SQL cursor executed as a
    protocol portal, and psycopg's named (server-side) cursor in text and binary."""
    assert not wire.q("BEGIN; DECLARE c1 SCROLL CURSOR FOR SELECT ssn || '' AS x, u FROM leak_users u").errors
    r1 = wire.q("FETCH 2 FROM c1; MOVE FIRST IN c1; FETCH ABSOLUTE 3 FROM c1; FETCH BACKWARD ALL FROM c1")
    r2 = wire.exchange(parse(b"", "FETCH ABSOLUTE 1 FROM c1") + bind(b"", b"", (1, 1)) + execute() + SYNC)
    r3 = wire.exchange(execute(b"c1") + SYNC)  # the SQL cursor is a portal too
    wire.q("COMMIT")
    assert len(r1.rows) >= 4 and len(r2.rows) == 1, (r1.errors, r2.errors)
    clean(r1.raw + r2.raw + r3.raw)
    for binary in (False, True):
        with psycopg.connect(dsn) as conn:
            with conn.cursor(name="leak_named", binary=binary) as cur:
                cur.execute("SELECT ssn || '', email, to_json(u) FROM leak_users u")
                rows = cur.fetchall()
        assert len(rows) == 3
        clean(rows)


def test_builtins_that_run_sql_from_text(wire, clean):
    """query_to_xml, table_to_xml, cursor_to_xml, ts_stat: built-ins that read a table named in a
    string, not in the statement's syntax."""
    replies = [
        wire.q("SELECT query_to_xml('SELECT ssn, email FROM leak_users', true, false, '')"),
        wire.q("SELECT table_to_xml('leak_users', true, false, '')"),
        wire.q("BEGIN; DECLARE cx CURSOR FOR SELECT ssn, email FROM leak_users; "
               "SELECT cursor_to_xml('cx', 10, true, false, ''); COMMIT"),
        wire.q("SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', replace(ssn, ''-'', '''')) FROM leak_users')"),
        wire.q("SELECT query_to_xml_and_xmlschema('SELECT * FROM leak_users', false, false, '')"),
    ]
    for r in replies:
        assert refused(r) or (r.rows and not r.errors), r.errors
    clean(b"".join(r.raw for r in replies))


# ------------------------------------------------------------------------------------ code


def test_function_created_in_the_session(wire, clean):
    """CREATE FUNCTION reading the masked column, then SELECT of it and of a view over it."""
    r = wire.q("CREATE FUNCTION leak_fn2() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM leak_users WHERE id = 1'")
    clean(r.raw)
    if refused(r):
        return
    assert not r.errors
    r = wire.q("SELECT leak_fn2(); SELECT * FROM leak_fn2(); SELECT s FROM (SELECT leak_fn2() AS s) x")
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_existing_function_and_view_over_it(wire, clean):
    """A function that existed before the session (it reads the masked column), called directly,
    in FROM, and through a view; the source cannot be told, so the result must be masked."""
    for sql in ("SELECT leak_fn()", "SELECT * FROM leak_fn()", "SELECT s FROM leak_fv", "SELECT s || '' FROM leak_fv"):
        r = wire.q(sql)
        clean(r.raw)
        assert refused(r) or len(r.rows) == 1, r.errors


def test_session_function_shadows_a_builtin(wire, clean):
    """A function created in the session named like a built-in (upper), found first once public
    comes before pg_catalog in the search path; its body calls the existing leak_fn()."""
    r = wire.q("CREATE FUNCTION public.upper(text) RETURNS text LANGUAGE sql AS 'SELECT leak_fn()'")
    clean(r.raw)
    if refused(r):
        return
    try:
        assert not r.errors, r.errors
        r = wire.q("SET search_path = public, pg_catalog; SELECT upper('x')")
        assert len(r.rows) == 1, r.errors
        clean(r.raw)
    finally:
        wire.q("RESET search_path; DROP FUNCTION public.upper(text)")


def test_existing_function_through_the_function_call_message(wire, clean):
    """The FunctionCall message (fast path) of that function: the reply is a FunctionCallResponse,
    not a DataRow."""
    oid = int(wire.q("SELECT 'leak_fn()'::regprocedure::oid").rows[0][0])
    r = wire.exchange(function_call(oid, []))
    clean(r.raw)
    assert refused(r) or r.of(b"V"), r.errors


def test_existing_operator(wire, clean):
    """An operator whose function reads the masked column: no function call shows in the SQL."""
    r = wire.q("SELECT 1 ### 0, 2 ### 0; SELECT 1 OPERATOR(public.###) 0")
    assert len(r.rows) == 2, r.errors
    clean(r.raw)


@pytest.mark.parametrize("body", [
    "RAISE NOTICE '%', s",
    "RAISE WARNING 'value: %', s",
    "RAISE EXCEPTION '%', s",
    "RAISE EXCEPTION USING ERRCODE = '22000', MESSAGE = s",
    "RAISE EXCEPTION USING ERRCODE = '42000', MESSAGE = s",
    "RAISE EXCEPTION USING ERRCODE = '23505', MESSAGE = 'x', DETAIL = 'y', HINT = s",
    "RAISE NOTICE USING MESSAGE = 'ok', DETAIL = s",
    "EXECUTE 'SELECT ' || s",  # a syntax error quoting the dynamic query
    "RAISE NOTICE '%', e",  # the detector's value
])
@pytest.mark.parametrize("source", ["table", "function"])
def test_raise_in_do_block(dsn, clean, body, source):
    """RAISE (notice, warning, exception with any SQLSTATE, detail, hint) and dynamic SQL errors
    in a DO block carrying the masked value, read from the table or from the existing function."""
    read = ("SELECT ssn, note INTO s, e FROM leak_users WHERE id = 1" if source == "table"
            else "s := leak_fn(); e := (SELECT note FROM leak_users WHERE id = 1)")
    sql = f"DO $$ DECLARE s text; e text; BEGIN {read}; {body}; END $$"
    errors, notices = run_error(dsn, sql)
    assert errors or notices
    clean([errors, notices])


# ------------------------------------------------------------------------------------ encodings


def test_client_encoding_latin1(wire, clean):
    """SET client_encoding = 'LATIN1', then masked columns, detector text and COPY."""
    r = wire.q("SET client_encoding = 'LATIN1'; SELECT ssn, email || 'é', note FROM leak_users; "
               "COPY (SELECT ssn || 'é', note FROM leak_users) TO STDOUT (FORMAT csv)")
    assert len(r.rows) == 3 and not r.errors
    clean(r.raw)


# a statement that reads differently in UTF-8 and in Shift-JIS: in Shift-JIS the UTF-8 bytes of
# 'Ё' followed by a backslash form two characters that swallow the backslash, so the E-string
# ends one quote earlier; the rest then reads as a constant and a comment
TWO_READINGS = "SELECT E'Ё\\', $$x$$ AS b --', ssn || '' AS b FROM leak_users"


def test_client_encoding_changed_inside_the_query(wire, clean):
    """SET client_encoding = 'SJIS' and the two-readings SELECT in one Query (the server reads the
    whole Query in the encoding it arrived in)."""
    r = wire.q(("SET client_encoding = 'SJIS'; " + TWO_READINGS).encode("utf-8"))
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_client_encoding_changed_between_parse_and_execute(wire, clean):
    """Parse the two-readings SELECT in UTF-8, SET client_encoding = 'SJIS', then Bind/Execute: the
    server runs what it parsed in UTF-8."""
    assert not wire.exchange(parse(b"enc", TWO_READINGS.encode("utf-8")) + SYNC).errors
    assert not wire.q("SET client_encoding = 'SJIS'").errors
    r = wire.exchange(bind(b"", b"enc") + execute() + SYNC)
    assert len(r.rows) == 3, r.errors
    clean(r.raw)


def test_standard_conforming_strings_off(wire, clean):
    """standard_conforming_strings off: masked values still masked (statements with a backslash
    are refused by the gateway, the rest runs)."""
    r = wire.q("SET standard_conforming_strings = off; SELECT ssn || '', email FROM leak_users")
    r2 = wire.q("SELECT ssn || 'a\\b' FROM leak_users")
    assert len(r.rows) == 3
    clean(r.raw + r2.raw)


# ------------------------------------------------------------------------------------ COPY


@pytest.mark.parametrize("options", [
    "", "(FORMAT csv, HEADER)", "(FORMAT csv, FORCE_QUOTE *)", "(FORMAT binary)",
    "(FORMAT text, DELIMITER '-')", "(FORMAT csv, DELIMITER '-', QUOTE '1')", "(FORMAT text, NULL 'x')",
])
def test_copy_query_to_stdout(wire, clean, options):
    """COPY (query with expressions) TO STDOUT in every format and odd delimiters/quotes."""
    r = wire.q(f"COPY (SELECT id, ssn || '', upper(email), u, ssn FROM leak_users u) TO STDOUT {options}")
    assert r.of(b"d") and not r.errors, r.errors
    clean(r.raw)


def test_copy_table_and_columns(wire, clean):
    """COPY table TO STDOUT, with a column list, and through the extended protocol."""
    r = wire.q("COPY leak_users TO STDOUT; COPY leak_users (ssn, email) TO STDOUT (FORMAT csv)")
    r2 = wire.exchange(parse(b"", "COPY (SELECT ssn || '' FROM leak_users) TO STDOUT")
                       + bind(b"", b"") + execute() + SYNC)
    assert len(r.of(b"d")) >= 6 and r2.of(b"d"), (r.errors, r2.errors)
    clean(r.raw + r2.raw)


def test_copy_with_encoding_option(wire, clean):
    """COPY ... ENCODING 'SJIS' with a custom delimiter: in Shift-JIS the second byte of 'ソ' is a
    backslash, so a reader splitting the UTF-8 session's way would shift the columns."""
    r = wire.q("COPY (SELECT 'ソ|' AS p, ssn, 'ソ' AS q, 'z' AS r FROM leak_users) TO STDOUT "
               "(FORMAT text, DELIMITER '|', ENCODING 'SJIS')")
    assert r.of(b"d") and not r.errors, r.errors
    clean(r.raw)


# ------------------------------------------------------------------------------------ error texts


@pytest.mark.parametrize("sql", [
    "SELECT ssn::int FROM leak_users WHERE id = 1",
    "SELECT ssn::int FROM leak_users WHERE id = 3",  # a value with double quotes in it
    "SELECT email::numeric FROM leak_users WHERE id = 1",
    "SELECT ssn::json FROM leak_users WHERE id = 1",
    "SELECT ssn::regclass FROM leak_users WHERE id = 1",
    "SELECT ssn::regtype FROM leak_users WHERE id = 1",
    "SELECT ssn::regrole FROM leak_users WHERE id = 1",
    "SELECT ssn::regnamespace FROM leak_users WHERE id = 1",
    "SELECT ssn::regproc FROM leak_users WHERE id = 1",
    "SELECT current_setting(ssn) FROM leak_users WHERE id = 1",
    "SELECT set_config(ssn, 'x', false) FROM leak_users WHERE id = 1",
    "SELECT nextval(ssn) FROM leak_users WHERE id = 1",
    "SELECT (ssn || ' &')::tsquery FROM leak_users WHERE id = 1",
    "SELECT ('$.' || ssn)::jsonpath FROM leak_users WHERE id = 1",
    "SELECT convert_to(email, ssn) FROM leak_users WHERE id = 1",
    "SELECT to_date(ssn, 'YYYY-MM-DD') FROM leak_users WHERE id = 1",
    "SELECT ('<' || ssn)::xml FROM leak_users WHERE id = 1",
    "SELECT leak_fn()::regclass",
    "SELECT leak_fn()::int",
])
def test_error_messages(dsn, clean, sql):
    """Errors that quote the value they failed on (data errors, unknown names, syntax errors)."""
    errors, notices = run_error(dsn, sql)
    assert errors, "the statement was expected to fail"
    clean([errors, notices])


def test_constraint_violations(wire, clean):
    """Check and not-null violations show the failing row (``Failing row contains (...)``) even
    when the statement writes only a constant."""
    try:
        r = wire.q("BEGIN; ALTER TABLE leak_users ADD CONSTRAINT leak_c CHECK (note <> 'boom')")
        if r.errors:  # the gateway may refuse to alter a masked table at all: nothing can leak then
            assert all(e["M"].startswith("wiregate: blocked by mask rules") for e in r.errors), r.errors
            clean(r.raw)
            return
        r2 = wire.q("SAVEPOINT a; UPDATE leak_users SET note = 'boom' WHERE id = 1")
        r3 = wire.q("ROLLBACK TO a; UPDATE leak_users SET note = NULL WHERE id = 1; "
                    "ALTER TABLE leak_users ALTER COLUMN note SET NOT NULL")
        r4 = wire.q("ROLLBACK TO a; ALTER TABLE leak_users ALTER COLUMN email SET NOT NULL; "
                    "UPDATE leak_users SET email = NULL WHERE id = 1")
        assert r2.errors and r3.errors and r4.errors
        clean(r.raw + r2.raw + r3.raw + r4.raw)
    finally:
        wire.q("ROLLBACK")


# ------------------------------------------------------------------------------------ state that outlives a statement

# each technique stores a masked value somewhere (a setting, a notification, a sequence, a lock, a
# large object, the catalog) and reads it back with a statement that no longer names the masked
# column; the source is the table itself or the existing function leak_fn(). The gateway may refuse
# the storing statement (42501 "wiregate: ..."): the value then never leaves.
SOURCES = {"table": "(SELECT ssn FROM leak_users WHERE id = 1)", "function": "leak_fn()"}


@pytest.mark.parametrize("source", SOURCES)
def test_settings(mgw, token, clean, source):
    """set_config with the value, read back by SHOW / current_setting, by the ParameterStatus the
    server reports for application_name, and by another session in pg_stat_activity."""
    v = SOURCES[source]
    w, other = Wire(mgw, token), Wire(mgw, token)
    try:
        r = w.q(f"SELECT set_config('leak.x', {v}, false), set_config('application_name', {v}, false)")
        r2 = w.q("SHOW leak.x; SELECT current_setting('leak.x', true); SHOW application_name")
        r3 = other.q("SELECT application_name FROM pg_stat_activity")
    finally:
        w.close()
        other.close()
    clean(r.raw + r2.raw + r3.raw)
    assert refused(r) or (r.rows and r2.rows and r3.rows), (r.errors, r2.errors)


@pytest.mark.parametrize("source", SOURCES)
def test_settings_psycopg(dsn, clean, source):
    """The same through psycopg: the application_name it learns from ParameterStatus."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(f"SELECT set_config('application_name', {SOURCES[source]}, false)")
        except psycopg.errors.InsufficientPrivilege as e:
            assert str(e).startswith("wiregate:")
        seen = conn.info.parameter_status("application_name")
        shown = conn.execute("SHOW application_name").fetchone()
    clean([seen, shown])


@pytest.mark.parametrize("source", SOURCES)
def test_notifications(mgw, token, clean, source):
    """pg_notify(channel, value) with LISTEN on the same and on another connection."""
    listener, w = Wire(mgw, token), Wire(mgw, token)
    try:
        assert not listener.q("LISTEN leak_ch").errors
        assert not w.q("LISTEN leak_ch").errors
        r = w.q(f"SELECT pg_notify('leak_ch', {SOURCES[source]}); "
                "SELECT pg_notify('leak_ch', note) FROM leak_users WHERE id = 1")
        other = listener.exchange(b"", readies=0, until=b"A") if not refused(r) else r
    finally:
        listener.close()
        w.close()
    clean(r.raw + other.raw)
    assert refused(r) or (r.of(b"A") and other.of(b"A")), r.errors


@pytest.mark.parametrize("source", SOURCES)
def test_sequences(wire, clean, source):
    """setval(seq, digits of the value), then currval / lastval / the sequence itself."""
    assert not wire.q("CREATE TEMP SEQUENCE leak_tseq").errors
    r = wire.q(f"SELECT setval('leak_tseq', replace({SOURCES[source]}, '-', '')::bigint)")
    r2 = wire.q("SELECT currval('leak_tseq'); SELECT last_value FROM leak_tseq; SELECT lastval()")
    clean(r.raw + r2.raw)
    assert refused(r) or r2.rows, (r.errors, r2.errors)


@pytest.mark.parametrize("source", SOURCES)
def test_advisory_lock_keys(wire, clean, source):
    """pg_advisory_lock(digits of the value), then the lock key in pg_locks."""
    r = wire.q(f"SELECT pg_advisory_lock(replace({SOURCES[source]}, '-', '')::bigint)")
    r2 = wire.q("SELECT objid FROM pg_locks WHERE locktype = 'advisory'")
    wire.q("SELECT pg_advisory_unlock_all()")
    clean(r.raw + r2.raw)
    assert refused(r) or r2.rows, (r.errors, r2.errors)


@pytest.mark.parametrize("source", SOURCES)
def test_large_objects(wire, clean, source):
    """lo_from_bytea(oid, value), then lo_get / loread of that object."""
    r = wire.q(f"SELECT lo_from_bytea(424201, convert_to({SOURCES[source]}, 'UTF8'))")
    try:
        r2 = wire.q("SELECT lo_get(424201); SELECT encode(lo_get(424201), 'escape'); "
                    "BEGIN; SELECT loread(lo_open(424201, 262144), 100); COMMIT")
    finally:
        wire.q("ROLLBACK; SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = 424201")
    clean(r.raw + r2.raw)
    assert refused(r) or len(r2.rows) == 3, (r.errors, r2.errors)


@pytest.mark.parametrize("source", SOURCES)
def test_object_names_and_comments(wire, clean, source):
    """A DO block names a temp table and writes a comment after the value; the catalog shows both."""
    v = SOURCES[source]
    r = wire.q(f"DO $$ BEGIN EXECUTE format('CREATE TEMP TABLE %I (i int)', 't' || {v}); "
               f"EXECUTE format('COMMENT ON TABLE leak_sink IS %L', {v}); END $$")
    try:
        r2 = wire.q("SELECT relname FROM pg_class WHERE relname LIKE 't1%'; "
                    "SELECT obj_description('leak_sink'::regclass, 'pg_class')")
    finally:
        wire.q("COMMENT ON TABLE leak_sink IS NULL")
    clean(r.raw + r2.raw)
    assert refused(r) or (not r.errors and len(r2.rows) == 2), (r.errors, r2.errors)


def test_planner_statistics(wire, clean):
    """ANALYZE, then pg_stats.histogram_bounds / most_common_vals, as they are and cast or unnested."""
    assert not wire.q("ANALYZE leak_users").errors
    r = wire.q("SELECT attname, histogram_bounds, most_common_vals FROM pg_stats WHERE tablename = 'leak_users'; "
               "SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'leak_users'; "
               "SELECT x FROM pg_stats, unnest(histogram_bounds::text::text[]) x WHERE tablename = 'leak_users'")
    assert r.rows and not r.errors, r.errors
    clean(r.raw)


def test_explain_analyze_verbose(wire, clean):
    """EXPLAIN (ANALYZE, VERBOSE) of queries reading the masked columns and the existing function."""
    r = wire.q("EXPLAIN (ANALYZE, VERBOSE) SELECT ssn || '' FROM leak_users WHERE email LIKE '%'; "
               "EXPLAIN (VERBOSE, FORMAT json) SELECT * FROM leak_users WHERE ssn = (SELECT max(ssn) FROM leak_users); "
               "EXPLAIN (ANALYZE, VERBOSE) SELECT s FROM leak_fv")
    assert r.rows and not r.errors
    clean(r.raw)


# ------------------------------------------------------------------------------------ name resolution


def test_search_path_change(wire, clean):
    """SET search_path puts another schema's table first: an unqualified name no longer means the
    table the snapshot's search path names."""
    r = wire.q("SET search_path = leak_vault, public; SELECT v || '' FROM leak_shadow; SELECT v FROM leak_shadow")
    assert len(r.rows) == 2, r.errors
    clean(r.raw)


def test_search_path_changed_by_set_config(wire, clean):
    """The same with set_config('search_path', ...), which is a function call, not a SET."""
    r = wire.q("SELECT set_config('search_path', 'leak_vault, public', false)")
    r2 = wire.q("SELECT v || '' FROM leak_shadow")
    assert not r.errors and len(r2.rows) == 1, (r.errors, r2.errors)
    clean(r.raw + r2.raw)


def test_temp_table_shadows_a_known_table(wire, clean):
    """A temp table named like a known unmasked table comes first in the search path."""
    r = wire.q("CREATE TEMP TABLE leak_sink AS SELECT id, ssn AS v FROM leak_users")
    clean(r.raw)
    if refused(r):
        return
    r = wire.q("SELECT v FROM leak_sink; SELECT v || '' FROM leak_sink")
    assert len(r.rows) == 6, r.errors
    clean(r.raw)


def test_temp_view_shadows_a_known_table(wire, clean):
    """A temp view named like a known unmasked table comes first in the search path."""
    r = wire.q("CREATE TEMP VIEW leak_shadow AS SELECT ssn AS v FROM leak_users")
    clean(r.raw)
    if refused(r):
        return
    r = wire.q("SELECT v FROM leak_shadow; SELECT upper(v) FROM leak_shadow")
    assert len(r.rows) == 6, r.errors
    clean(r.raw)


def test_columns_swapped_by_rename_in_a_transaction(wire, clean):
    """ALTER TABLE ... RENAME COLUMN swaps ssn and note in this session's transaction: the
    snapshot still names attribute 4 "note"."""
    try:
        r = wire.q("BEGIN; ALTER TABLE leak_users RENAME COLUMN note TO tmp; "
                   "ALTER TABLE leak_users RENAME COLUMN ssn TO note; "
                   "ALTER TABLE leak_users RENAME COLUMN tmp TO ssn")
        clean(r.raw)
        if refused(r):
            return
        r = wire.q("SELECT note || '' FROM leak_users; SELECT note FROM leak_users")
        assert len(r.rows) == 6, r.errors
        clean(r.raw)
    finally:
        wire.q("ROLLBACK")


def test_table_renamed_and_replaced_in_a_transaction(wire, clean):
    """The known unmasked table renamed away and a view with its name created over the masked
    column, in one transaction."""
    try:
        r = wire.q("BEGIN; ALTER TABLE leak_sink RENAME TO leak_sink_old; "
                   "CREATE VIEW leak_sink AS SELECT id, ssn AS v FROM leak_users")
        clean(r.raw)
        if refused(r):
            return
        r = wire.q("SELECT v FROM leak_sink; SELECT v || '' FROM leak_sink")
        assert len(r.rows) == 6, r.errors
        clean(r.raw)
    finally:
        wire.q("ROLLBACK")


def test_masked_table_inherits_from_an_unmasked_one(wire, clean):
    """ALTER TABLE leak_users INHERIT leak_parent: the parent's scan returns the child's rows."""
    try:
        r = wire.q("BEGIN; ALTER TABLE leak_users INHERIT leak_parent")
        clean(r.raw)
        if refused(r):
            return
        r = wire.q("SELECT ssn, email FROM leak_parent; SELECT ssn || '' FROM leak_parent")
        assert len(r.rows) == 6, r.errors
        clean(r.raw)
    finally:
        wire.q("ROLLBACK")


def test_column_renamed_then_new_session(mgw, token, wire, clean):
    """RENAME COLUMN ssn, committed: a new session's snapshot no longer has a column the rule names."""
    r = wire.q("ALTER TABLE leak_users RENAME COLUMN ssn TO ident")
    clean(r.raw)
    if refused(r):
        return
    try:
        other = Wire(mgw, token)
        try:
            r = other.q("SELECT ident FROM leak_users")
        finally:
            other.close()
        assert len(r.rows) == 3, r.errors
        clean(r.raw)
    finally:
        assert not wire.q("ALTER TABLE leak_users RENAME COLUMN ident TO ssn").errors


def test_table_renamed_then_new_session(mgw, token, wire, clean):
    """RENAME the masked table, committed: a new session's snapshot has no table the rule names."""
    r = wire.q("ALTER TABLE leak_users RENAME TO leak_renamed")
    clean(r.raw)
    if refused(r):
        return
    try:
        other = Wire(mgw, token)
        try:
            r = other.q("SELECT ssn, email FROM leak_renamed")
        finally:
            other.close()
        assert len(r.rows) == 3, r.errors
        clean(r.raw)
    finally:
        assert not wire.q("ALTER TABLE leak_renamed RENAME TO leak_users").errors


# ------------------------------------------------------------------------------------ copies

# each writes the masked value somewhere, then reads it back; a refusal of the write is safe
COPIES = [
    ("create temp table as", "CREATE TEMP TABLE leak_t1 AS SELECT id, ssn AS s, email AS e FROM leak_users",
     "SELECT s, e FROM leak_t1; SELECT s || '' FROM leak_t1"),
    ("select into", "SELECT ssn AS s2 INTO TEMP leak_t2 FROM leak_users", "SELECT * FROM leak_t2"),
    ("insert select", "INSERT INTO leak_sink SELECT id, ssn FROM leak_users", "SELECT v FROM leak_sink"),
    ("update set", "UPDATE leak_users SET note = ssn", "SELECT note FROM leak_users"),
    ("update from", "UPDATE leak_sink SET v = u.ssn FROM leak_users u; INSERT INTO leak_sink VALUES (1, 'x');"
                    " UPDATE leak_sink s SET v = u.ssn FROM leak_users u WHERE u.id = s.id", "SELECT v FROM leak_sink"),
    ("merge", "MERGE INTO leak_sink s USING leak_users u ON false WHEN NOT MATCHED THEN INSERT VALUES (u.id, u.ssn)",
     "SELECT v FROM leak_sink"),
    ("writable cte", "WITH ins AS (INSERT INTO leak_sink SELECT id, ssn FROM leak_users RETURNING v) SELECT v FROM ins",
     "SELECT v FROM leak_sink"),
    ("alter column type using", "ALTER TABLE leak_users ALTER COLUMN note TYPE text USING ssn",
     "SELECT note FROM leak_users; SELECT note || '' FROM leak_users"),
    ("add generated column", "ALTER TABLE leak_sink ADD COLUMN w text GENERATED ALWAYS AS (v) STORED;"
                             " ALTER TABLE leak_users ADD COLUMN leak_g text GENERATED ALWAYS AS (ssn || '') STORED",
     "SELECT leak_g FROM leak_users"),
    ("insert table", "INSERT INTO leak_parent TABLE leak_users", "SELECT ssn FROM leak_parent"),
    ("prepared insert", "PREPARE leak_ins AS INSERT INTO leak_sink SELECT id, ssn FROM leak_users",
     "EXECUTE leak_ins; SELECT v FROM leak_sink"),
    ("create table as execute", "PREPARE leak_sel AS SELECT id, ssn AS v FROM leak_users;"
                                " CREATE TEMP TABLE leak_sink AS EXECUTE leak_sel",
     "SELECT v FROM leak_sink; SELECT v || '' FROM leak_sink"),
    ("insert from existing function", "INSERT INTO leak_sink SELECT 1, leak_fn()", "SELECT v FROM leak_sink"),
    ("insert from query_to_xml", "INSERT INTO leak_sink SELECT 1, query_to_xml('SELECT ssn FROM leak_users',"
                                 " true, false, '')::text", "SELECT v FROM leak_sink"),
    ("trigger", "CREATE FUNCTION leak_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " NEW.v := (SELECT ssn FROM leak_users WHERE id = 1); RETURN NEW; END $$;"
                " CREATE TRIGGER leak_t BEFORE INSERT ON leak_sink FOR EACH ROW EXECUTE FUNCTION leak_trg()",
     "INSERT INTO leak_sink VALUES (1, 'x') RETURNING v; SELECT v FROM leak_sink"),
]


@pytest.mark.parametrize("write, read", [c[1:] for c in COPIES], ids=[c[0] for c in COPIES])
def test_copied_in_a_transaction(wire, clean, write, read):
    """The masked value copied into an unmasked place in this session, then read back (rolled back)."""
    try:
        assert not wire.q("BEGIN").errors
        r = wire.q(write)
        clean(r.raw)
        if refused(r):
            return
        assert not r.errors, r.errors
        r = wire.q(read)
        assert r.rows and not r.errors, r.errors
        clean(r.raw)
    finally:
        wire.q("ROLLBACK")


def test_create_table_as_then_new_session(mgw, token, wire, clean):
    """CREATE TABLE AS with a renamed column, read from a new session (whose snapshot knows it)."""
    r = wire.q("CREATE TABLE leak_copy AS SELECT id, ssn AS s FROM leak_users")
    clean(r.raw)
    if refused(r):
        return
    try:
        other = Wire(mgw, token)
        try:
            r = other.q("SELECT s FROM leak_copy")
        finally:
            other.close()
        assert len(r.rows) == 3, r.errors
        clean(r.raw)
    finally:
        wire.q("DROP TABLE leak_copy")


def test_generated_column_then_new_session(mgw, token, wire, clean):
    """ALTER TABLE ADD COLUMN ... GENERATED ALWAYS AS (ssn || '') STORED, committed: a new
    session's snapshot knows the column under a name no rule covers."""
    r = wire.q("ALTER TABLE leak_users ADD COLUMN leak_g text GENERATED ALWAYS AS (ssn || '') STORED")
    clean(r.raw)
    if refused(r):
        return
    try:
        assert not r.errors, r.errors
        other = Wire(mgw, token)
        try:
            r = other.q("SELECT leak_g FROM leak_users")
        finally:
            other.close()
        assert len(r.rows) == 3, r.errors
        clean(r.raw)
    finally:
        wire.q("ALTER TABLE leak_users DROP COLUMN IF EXISTS leak_g")


def test_views_in_the_same_and_a_new_session(mgw, token, wire, clean):
    """CREATE VIEW / MATERIALIZED VIEW over the masked column, read now and from a new session."""
    r = wire.q("CREATE VIEW leak_v AS SELECT ssn AS s, email AS e FROM leak_users")
    assert not r.errors
    rm = wire.q("CREATE MATERIALIZED VIEW leak_mv AS SELECT ssn || '' AS s FROM leak_users")
    assert refused(rm) or not rm.errors
    mv = "" if refused(rm) else "; SELECT s FROM leak_mv; SELECT s || '' FROM leak_mv"
    r2 = wire.q("SELECT s, e FROM leak_v; SELECT s || '' FROM leak_v" + mv)
    other = Wire(mgw, token)
    try:
        r3 = other.q("SELECT s, e FROM leak_v; SELECT s || '' FROM leak_v" + mv)
    finally:
        other.close()
    n = 6 if refused(rm) else 12
    assert len(r2.rows) == n and len(r3.rows) == n, (r2.errors, r3.errors)
    clean(r.raw + rm.raw + r2.raw + r3.raw)
